package codec

// Puback is a PUBACK packet.
type Puback struct {
	PacketID     uint16
	ReasonCode   byte   // a missing reason byte (remaining length 2) means 0x00, Success
	ReasonString string // property 0x1F; "" = absent
}

// AppendPuback appends p as a PUBACK packet in the shortest form MQTT
// allows: remaining length 2 for Success without a reason string, 3 for
// another reason code without one. The caller guarantees a non-zero PacketID
// and a valid ReasonString of at most 65535 bytes.
func AppendPuback(dst []byte, p *Puback) []byte {
	if p.ReasonString == "" {
		if p.ReasonCode == 0 {
			return append(dst, TypePuback<<4, 2, byte(p.PacketID>>8), byte(p.PacketID))
		}
		return append(dst, TypePuback<<4, 3, byte(p.PacketID>>8), byte(p.PacketID), p.ReasonCode)
	}
	props := propLenString(len(p.ReasonString))
	rem := 3 + varintLen(props) + props
	dst = append(dst, TypePuback<<4)
	dst = appendVarint(dst, rem)
	dst = appendU16(dst, p.PacketID)
	dst = append(dst, p.ReasonCode)
	dst = appendVarint(dst, props)
	return appendPropString(dst, propReasonString, p.ReasonString)
}

// DecodePuback decodes the body of a PUBACK packet. A packet identifier of 0
// is malformed. Any reason code is accepted: below 0x80 is success, from 0x80
// failure (MQTT 5 §2.4), and brokers do send codes that MQTT lists only for
// other packets (mosquitto answers an oversized publish with 0x95). It does
// not allocate unless there is a reason string or an error.
func DecodePuback(body []byte) (Puback, error) {
	if len(body) < 2 {
		return Puback{}, errTruncated
	}
	p := Puback{PacketID: uint16(body[0])<<8 | uint16(body[1])}
	if p.PacketID == 0 {
		return Puback{}, errPacketIDZero
	}
	if len(body) == 2 {
		return p, nil
	}
	p.ReasonCode = body[2] // any code: brokers send some MQTT lists for other packets only
	if len(body) == 3 {
		return p, nil
	}
	r := reader{b: body[3:]}
	it, err := readProps(&r, inPuback)
	if err != nil {
		return Puback{}, err
	}
	for {
		pr, ok, err := it.next()
		if err != nil {
			return Puback{}, err
		}
		if !ok {
			break
		}
		if pr.id == propReasonString {
			p.ReasonString = string(pr.data)
		}
	}
	if !r.empty() {
		return Puback{}, errTrailing
	}
	return p, nil
}

// AppendPingreq appends a PINGREQ packet (C0 00).
func AppendPingreq(dst []byte) []byte { return append(dst, TypePingreq<<4, 0) }

// AppendPingresp appends a PINGRESP packet (D0 00).
func AppendPingresp(dst []byte) []byte { return append(dst, TypePingresp<<4, 0) }

// Disconnect is a DISCONNECT packet. User properties are validated and
// skipped when decoding.
type Disconnect struct {
	ReasonCode       byte
	ReasonString     string // property 0x1F; "" = absent
	SessionExpiry    uint32 // property 0x11; 0 = absent unless HasSessionExpiry
	HasSessionExpiry bool   // property 0x11 present; needed because an explicit 0 ends a session CONNECT asked to keep, while absent keeps it
	ServerReference  string // property 0x1C; "" = absent
}

// disconnectPropsLen is the size of d's property block, without its length.
func disconnectPropsLen(d *Disconnect) int {
	n := 0
	if d.SessionExpiry != 0 || d.HasSessionExpiry {
		n += propLenU32
	}
	if d.ReasonString != "" {
		n += propLenString(len(d.ReasonString))
	}
	if d.ServerReference != "" {
		n += propLenString(len(d.ServerReference))
	}
	return n
}

// AppendDisconnect appends d as a DISCONNECT packet in the shortest form MQTT
// allows: remaining length 0 for reason 0 without properties, 1 for another
// reason without properties. The caller guarantees valid strings of at most
// 65535 bytes.
func AppendDisconnect(dst []byte, d *Disconnect) []byte {
	props := disconnectPropsLen(d)
	if props == 0 {
		if d.ReasonCode == 0 {
			return append(dst, TypeDisconnect<<4, 0)
		}
		return append(dst, TypeDisconnect<<4, 1, d.ReasonCode)
	}
	rem := 1 + varintLen(props) + props
	dst = append(dst, TypeDisconnect<<4)
	dst = appendVarint(dst, rem)
	dst = append(dst, d.ReasonCode)
	dst = appendVarint(dst, props)
	if d.SessionExpiry != 0 || d.HasSessionExpiry {
		dst = appendPropU32(dst, propSessionExpiry, d.SessionExpiry)
	}
	if d.ReasonString != "" {
		dst = appendPropString(dst, propReasonString, d.ReasonString)
	}
	if d.ServerReference != "" {
		dst = appendPropString(dst, propServerReference, d.ServerReference)
	}
	return dst
}

// DecodeDisconnect decodes the body of a DISCONNECT packet. An empty body
// means reason code 0 (Normal disconnection). Any reason code is accepted,
// as in DecodePuback.
func DecodeDisconnect(body []byte) (Disconnect, error) {
	var d Disconnect
	if len(body) == 0 {
		return d, nil
	}
	d.ReasonCode = body[0]
	if len(body) == 1 {
		return d, nil
	}
	r := reader{b: body[1:]}
	it, err := readProps(&r, inDisconnect)
	if err != nil {
		return Disconnect{}, err
	}
	for {
		p, ok, err := it.next()
		if err != nil {
			return Disconnect{}, err
		}
		if !ok {
			break
		}
		switch p.id {
		case propSessionExpiry:
			d.SessionExpiry = p.num
			d.HasSessionExpiry = true
		case propReasonString:
			d.ReasonString = string(p.data)
		case propServerReference:
			d.ServerReference = string(p.data)
		}
	}
	if !r.empty() {
		return Disconnect{}, errTrailing
	}
	return d, nil
}
