package codec

import "fmt"

// Connect is a CONNECT packet. Fields for features mdclient does not use
// (Will Message, authentication, user properties) are not represented.
type Connect struct {
	ClientID          string
	Username          string
	HasUsername       bool
	Password          []byte // decoding: aliases the body; nil when empty
	HasPassword       bool
	CleanStart        bool
	KeepAlive         uint16 // seconds
	SessionExpiry     uint32 // property 0x11; 0 = absent (the same meaning as an explicit 0 in CONNECT)
	ReceiveMaximum    uint16 // property 0x21; 0 = absent
	MaximumPacketSize uint32 // property 0x27; 0 = absent
	TopicAliasMaximum uint16 // property 0x22; 0 = absent
}

// CONNECT flag bits (MQTT 5.0 section 3.1.2.3).
const (
	connReserved   = 0x01
	connCleanStart = 0x02
	connWill       = 0x04
	connWillQoS    = 0x18
	connWillRetain = 0x20
	connPassword   = 0x40
	connUsername   = 0x80
)

const protocolLevel = 5

// connectPropsLen is the size of c's property block, without its length.
func connectPropsLen(c *Connect) int {
	n := 0
	if c.SessionExpiry != 0 {
		n += propLenU32
	}
	if c.ReceiveMaximum != 0 {
		n += propLenU16
	}
	if c.MaximumPacketSize != 0 {
		n += propLenU32
	}
	if c.TopicAliasMaximum != 0 {
		n += propLenU16
	}
	return n
}

// AppendConnect appends c as a CONNECT packet for protocol "MQTT" level 5.
// Unlike the other encoders it validates its input, as CONNECT is rare and
// its strings come from configuration: a client ID or user name that is
// longer than 65535 bytes, not valid UTF-8 or holds U+0000, or a password
// longer than 65535 bytes, gives an error wrapping [ErrMalformed] and dst
// unchanged.
func AppendConnect(dst []byte, c *Connect) ([]byte, error) {
	if !validString(c.ClientID) {
		return dst, fmt.Errorf("%w: client ID is not a valid MQTT string", ErrMalformed)
	}
	if c.HasUsername && !validString(c.Username) {
		return dst, fmt.Errorf("%w: user name is not a valid MQTT string", ErrMalformed)
	}
	if c.HasPassword && len(c.Password) > 65535 {
		return dst, fmt.Errorf("%w: password longer than 65535 bytes", ErrMalformed)
	}
	props := connectPropsLen(c)
	rem := 6 + 1 + 1 + 2 + varintLen(props) + props + 2 + len(c.ClientID)
	var flags byte
	if c.CleanStart {
		flags |= connCleanStart
	}
	if c.HasUsername {
		flags |= connUsername
		rem += 2 + len(c.Username)
	}
	if c.HasPassword {
		flags |= connPassword
		rem += 2 + len(c.Password)
	}

	dst = append(dst, TypeConnect<<4)
	dst = appendVarint(dst, rem)
	dst = append(dst, 0, 4, 'M', 'Q', 'T', 'T', protocolLevel, flags)
	dst = appendU16(dst, c.KeepAlive)
	dst = appendVarint(dst, props)
	if c.SessionExpiry != 0 {
		dst = appendPropU32(dst, propSessionExpiry, c.SessionExpiry)
	}
	if c.ReceiveMaximum != 0 {
		dst = appendPropU16(dst, propReceiveMaximum, c.ReceiveMaximum)
	}
	if c.MaximumPacketSize != 0 {
		dst = appendPropU32(dst, propMaximumPacketSize, c.MaximumPacketSize)
	}
	if c.TopicAliasMaximum != 0 {
		dst = appendPropU16(dst, propTopicAliasMaximum, c.TopicAliasMaximum)
	}
	dst = appendString(dst, c.ClientID)
	if c.HasUsername {
		dst = appendString(dst, c.Username)
	}
	if c.HasPassword {
		dst = appendBinary(dst, c.Password)
	}
	return dst, nil
}

// DecodeConnect decodes the body of a CONNECT packet. A protocol name other
// than "MQTT" is malformed; a protocol level other than 5 wraps
// [ErrUnsupported], so a server can answer with reason code 0x84. A Will
// Message is fully validated and then dropped, since Connect has no field
// for it. Properties Connect does not represent (authentication, request
// flags, user properties) are validated and skipped.
func DecodeConnect(body []byte) (Connect, error) {
	var c Connect
	r := reader{b: body}
	name, err := r.str()
	if err != nil {
		return Connect{}, err
	}
	if string(name) != "MQTT" {
		return Connect{}, fmt.Errorf("%w: protocol name is not MQTT", ErrMalformed)
	}
	level, err := r.u8()
	if err != nil {
		return Connect{}, err
	}
	if level != protocolLevel {
		return Connect{}, fmt.Errorf("%w: protocol level %d", ErrUnsupported, level)
	}
	flags, err := r.u8()
	if err != nil {
		return Connect{}, err
	}
	if flags&connReserved != 0 {
		return Connect{}, fmt.Errorf("%w: CONNECT reserved flag set", ErrMalformed)
	}
	will := flags&connWill != 0
	willQoS := (flags & connWillQoS) >> 3
	if willQoS == 3 {
		return Connect{}, fmt.Errorf("%w: Will QoS 3", ErrMalformed)
	}
	if !will && flags&(connWillQoS|connWillRetain) != 0 {
		return Connect{}, fmt.Errorf("%w: Will QoS or Retain set without Will flag", ErrMalformed)
	}
	c.CleanStart = flags&connCleanStart != 0
	c.HasUsername = flags&connUsername != 0
	c.HasPassword = flags&connPassword != 0
	if c.KeepAlive, err = r.u16(); err != nil {
		return Connect{}, err
	}

	it, err := readProps(&r, inConnect)
	if err != nil {
		return Connect{}, err
	}
	for {
		p, ok, err := it.next()
		if err != nil {
			return Connect{}, err
		}
		if !ok {
			break
		}
		switch p.id {
		case propSessionExpiry:
			c.SessionExpiry = p.num
		case propReceiveMaximum:
			c.ReceiveMaximum = uint16(p.num)
		case propMaximumPacketSize:
			c.MaximumPacketSize = p.num
		case propTopicAliasMaximum:
			c.TopicAliasMaximum = uint16(p.num)
		}
	}
	if it.has(propAuthData) && !it.has(propAuthMethod) {
		return Connect{}, fmt.Errorf("%w: authentication data without method", ErrMalformed)
	}

	id, err := r.str()
	if err != nil {
		return Connect{}, err
	}
	c.ClientID = string(id)

	if will {
		wit, err := readProps(&r, inWill)
		if err != nil {
			return Connect{}, err
		}
		if err := wit.skipAll(); err != nil {
			return Connect{}, err
		}
		topic, err := r.str()
		if err != nil {
			return Connect{}, err
		}
		if !validTopicBytes(topic) {
			return Connect{}, errBadTopicName
		}
		if _, err := r.binary(); err != nil {
			return Connect{}, err
		}
	}
	if c.HasUsername {
		u, err := r.str()
		if err != nil {
			return Connect{}, err
		}
		c.Username = string(u)
	}
	if c.HasPassword {
		pw, err := r.binary()
		if err != nil {
			return Connect{}, err
		}
		if len(pw) > 0 {
			c.Password = pw
		}
	}
	if !r.empty() {
		return Connect{}, errTrailing
	}
	return c, nil
}

// Connack is a CONNACK packet. Properties it does not represent (response
// information, authentication, subscription capabilities, user properties)
// are validated and skipped when decoding.
type Connack struct {
	SessionPresent     bool
	ReasonCode         byte
	SessionExpiry      uint32 // property 0x11; 0 = absent unless HasSessionExpiry
	HasSessionExpiry   bool   // property 0x11 present; needed because an explicit 0 overrides the client's value while absent keeps it
	ReceiveMaximum     uint16 // property 0x21; 0 = absent (caller treats as 65535)
	MaximumQoS         byte   // property 0x24
	HasMaximumQoS      bool
	RetainAvailable    bool   // property 0x25; true when absent
	MaximumPacketSize  uint32 // property 0x27; 0 = absent
	AssignedClientID   string // property 0x12
	TopicAliasMaximum  uint16 // property 0x22; 0 = absent
	ReasonString       string // property 0x1F
	ServerKeepAlive    uint16 // property 0x13
	HasServerKeepAlive bool
	ServerReference    string // property 0x1C, with reason 0x9C or 0x9D: another server to use
}

// connackPropsLen is the size of c's property block, without its length.
func connackPropsLen(c *Connack) int {
	n := 0
	if c.SessionExpiry != 0 || c.HasSessionExpiry {
		n += propLenU32
	}
	if c.ReceiveMaximum != 0 {
		n += propLenU16
	}
	if c.HasMaximumQoS {
		n += propLenU8
	}
	if !c.RetainAvailable {
		n += propLenU8
	}
	if c.MaximumPacketSize != 0 {
		n += propLenU32
	}
	if c.AssignedClientID != "" {
		n += propLenString(len(c.AssignedClientID))
	}
	if c.TopicAliasMaximum != 0 {
		n += propLenU16
	}
	if c.ReasonString != "" {
		n += propLenString(len(c.ReasonString))
	}
	if c.HasServerKeepAlive {
		n += propLenU16
	}
	if c.ServerReference != "" {
		n += propLenString(len(c.ServerReference))
	}
	return n
}

// AppendConnack appends c as a CONNACK packet. The caller guarantees the
// strings are valid MQTT strings of at most 65535 bytes. Retain Available is
// written only when false, since absent means true.
func AppendConnack(dst []byte, c *Connack) []byte {
	props := connackPropsLen(c)
	rem := 2 + varintLen(props) + props
	var ack byte
	if c.SessionPresent {
		ack = 1
	}
	dst = append(dst, TypeConnack<<4)
	dst = appendVarint(dst, rem)
	dst = append(dst, ack, c.ReasonCode)
	dst = appendVarint(dst, props)
	if c.SessionExpiry != 0 || c.HasSessionExpiry {
		dst = appendPropU32(dst, propSessionExpiry, c.SessionExpiry)
	}
	if c.ReceiveMaximum != 0 {
		dst = appendPropU16(dst, propReceiveMaximum, c.ReceiveMaximum)
	}
	if c.HasMaximumQoS {
		dst = appendPropU8(dst, propMaximumQoS, c.MaximumQoS)
	}
	if !c.RetainAvailable {
		dst = appendPropU8(dst, propRetainAvailable, 0)
	}
	if c.MaximumPacketSize != 0 {
		dst = appendPropU32(dst, propMaximumPacketSize, c.MaximumPacketSize)
	}
	if c.AssignedClientID != "" {
		dst = appendPropString(dst, propAssignedClientID, c.AssignedClientID)
	}
	if c.TopicAliasMaximum != 0 {
		dst = appendPropU16(dst, propTopicAliasMaximum, c.TopicAliasMaximum)
	}
	if c.ReasonString != "" {
		dst = appendPropString(dst, propReasonString, c.ReasonString)
	}
	if c.HasServerKeepAlive {
		dst = appendPropU16(dst, propServerKeepAlive, c.ServerKeepAlive)
	}
	if c.ServerReference != "" {
		dst = appendPropString(dst, propServerReference, c.ServerReference)
	}
	return dst
}

// DecodeConnack decodes the body of a CONNACK packet. Besides the format it
// checks that Session Present is 0 when the reason code is not 0. Any reason
// code is accepted, as in DecodePuback.
func DecodeConnack(body []byte) (Connack, error) {
	c := Connack{RetainAvailable: true}
	r := reader{b: body}
	ack, err := r.u8()
	if err != nil {
		return Connack{}, err
	}
	if ack&^1 != 0 {
		return Connack{}, fmt.Errorf("%w: CONNACK reserved flags set", ErrMalformed)
	}
	c.SessionPresent = ack == 1
	if c.ReasonCode, err = r.u8(); err != nil {
		return Connack{}, err
	}
	if c.SessionPresent && c.ReasonCode != 0 {
		return Connack{}, fmt.Errorf("%w: session present with a failure reason code", ErrMalformed)
	}
	it, err := readProps(&r, inConnack)
	if err != nil {
		return Connack{}, err
	}
	for {
		p, ok, err := it.next()
		if err != nil {
			return Connack{}, err
		}
		if !ok {
			break
		}
		switch p.id {
		case propSessionExpiry:
			c.SessionExpiry = p.num
			c.HasSessionExpiry = true
		case propReceiveMaximum:
			c.ReceiveMaximum = uint16(p.num)
		case propMaximumQoS:
			c.MaximumQoS = byte(p.num)
			c.HasMaximumQoS = true
		case propRetainAvailable:
			c.RetainAvailable = p.num == 1
		case propMaximumPacketSize:
			c.MaximumPacketSize = p.num
		case propAssignedClientID:
			c.AssignedClientID = string(p.data)
		case propTopicAliasMaximum:
			c.TopicAliasMaximum = uint16(p.num)
		case propReasonString:
			c.ReasonString = string(p.data)
		case propServerKeepAlive:
			c.ServerKeepAlive = uint16(p.num)
			c.HasServerKeepAlive = true
		case propServerReference:
			c.ServerReference = string(p.data)
		}
	}
	if it.has(propAuthData) && !it.has(propAuthMethod) {
		return Connack{}, fmt.Errorf("%w: authentication data without method", ErrMalformed)
	}
	if !r.empty() {
		return Connack{}, errTrailing
	}
	return c, nil
}
