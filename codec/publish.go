package codec

import (
	"fmt"
	"slices"
)

// Publish is a PUBLISH packet. Subscription identifiers, which only a server
// sends, are validated and skipped when decoding.
type Publish struct {
	Topic            string // may be empty only when TopicAlias is set
	Payload          []byte // decoding: aliases the body; nil when empty
	PacketID         uint16 // present only when QoS > 0
	QoS              byte
	Retain           bool
	Dup              bool
	TopicAlias       uint16         // property 0x23; 0 = absent
	ResponseTopic    string         // property 0x08; "" = absent
	CorrelationData  []byte         // property 0x09; nil = absent; decoding: aliases the body
	PayloadFormat    byte           // property 0x01: 1 = UTF-8 text; 0 = absent (encoding), as sent (decoding)
	MessageExpiry    uint32         // property 0x02, in seconds, when HasMessageExpiry
	HasMessageExpiry bool           // property 0x02 present
	ContentType      string         // property 0x03; "" = absent
	UserProperties   []UserProperty // property 0x26, in order; a key may repeat
}

// UserProperty is an MQTT 5 User Property: a pair of UTF-8 strings. A packet
// may carry several, in order, and a key may repeat.
type UserProperty struct{ Key, Value string }

// publishPropsLen is the size of p's property block, without its length.
func publishPropsLen(p *Publish) int {
	n := 0
	if p.TopicAlias != 0 {
		n += propLenU16
	}
	if p.ResponseTopic != "" {
		n += propLenString(len(p.ResponseTopic))
	}
	if p.CorrelationData != nil {
		n += propLenString(len(p.CorrelationData))
	}
	if p.PayloadFormat != 0 {
		n += propLenU8
	}
	if p.HasMessageExpiry {
		n += propLenU32
	}
	if p.ContentType != "" {
		n += propLenString(len(p.ContentType))
	}
	for i := range p.UserProperties {
		n += propLenPair(len(p.UserProperties[i].Key), len(p.UserProperties[i].Value))
	}
	return n
}

// publishRemLen is the remaining length of p and the size of its properties.
func publishRemLen(p *Publish) (rem, props int) {
	props = publishPropsLen(p)
	rem = 2 + len(p.Topic) + varintLen(props) + props + len(p.Payload)
	if p.QoS > 0 {
		rem += 2
	}
	return rem, props
}

// PublishRemLen returns the remaining length of p: its size without the fixed header.
func PublishRemLen(p *Publish) int {
	rem, _ := publishRemLen(p)
	return rem
}

// PublishLen returns the total encoded size of p, fixed header included, so
// the caller can compare it with the server's Maximum Packet Size (or
// [MaxPacketSize]) before encoding. It does not allocate.
func PublishLen(p *Publish) int {
	rem, _ := publishRemLen(p)
	return 1 + varintLen(rem) + rem
}

// AppendPublish appends p as a PUBLISH packet. For speed it does not
// validate: the caller guarantees a valid topic name (see [ValidTopicName])
// or an empty one with a topic alias, QoS 0..2, no Dup at QoS 0, a non-zero
// PacketID at QoS > 0, strings (see [ValidString]) and correlation data of at
// most 65535 bytes, PayloadFormat 0 or 1, and PublishLen(p) <= MaxPacketSize. It allocates only when dst must grow,
// and then at most once.
func AppendPublish(dst []byte, p *Publish) []byte {
	rem, props := publishRemLen(p)
	dst = slices.Grow(dst, 1+varintLen(rem)+rem)
	first := TypePublish<<4 | p.QoS<<1
	if p.Dup {
		first |= 0b1000
	}
	if p.Retain {
		first |= 1
	}
	dst = append(dst, first)
	dst = appendVarint(dst, rem)
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendU16(dst, p.PacketID)
	}
	dst = appendVarint(dst, props)
	if p.TopicAlias != 0 {
		dst = appendPropU16(dst, propTopicAlias, p.TopicAlias)
	}
	if p.ResponseTopic != "" {
		dst = appendPropString(dst, propResponseTopic, p.ResponseTopic)
	}
	if p.CorrelationData != nil {
		dst = appendPropBinary(dst, propCorrelationData, p.CorrelationData)
	}
	if p.PayloadFormat != 0 {
		dst = appendPropU8(dst, propPayloadFormat, p.PayloadFormat)
	}
	if p.HasMessageExpiry {
		dst = appendPropU32(dst, propMessageExpiry, p.MessageExpiry)
	}
	if p.ContentType != "" {
		dst = appendPropString(dst, propContentType, p.ContentType)
	}
	for i := range p.UserProperties {
		dst = appendPropPair(dst, propUserProperty, p.UserProperties[i].Key, p.UserProperties[i].Value)
	}
	return append(dst, p.Payload...)
}

// DecodePublish decodes the body of a PUBLISH packet whose fixed header flags
// are flags (Header.Flags). It re-checks the flags, so it is safe without
// [Split]. The packet identifier is read only at QoS > 0 and must not be 0.
// The topic must be a valid topic name, or empty with a Topic Alias; a
// Response Topic must be a valid topic name.
func DecodePublish(flags byte, body []byte) (Publish, error) {
	if err := checkPublishFlags(flags); err != nil {
		return Publish{}, err
	}
	p := Publish{
		QoS:    (flags >> 1) & 3,
		Retain: flags&1 != 0,
		Dup:    flags&0b1000 != 0,
	}
	r := reader{b: body}
	topic, err := r.str()
	if err != nil {
		return Publish{}, err
	}
	if len(topic) > 0 && !validTopicBytes(topic) {
		return Publish{}, errBadTopicName
	}
	if p.QoS > 0 {
		if p.PacketID, err = r.u16(); err != nil {
			return Publish{}, err
		}
		if p.PacketID == 0 {
			return Publish{}, errPacketIDZero
		}
	}
	it, err := readProps(&r, inPublish)
	if err != nil {
		return Publish{}, err
	}
	for {
		pr, ok, err := it.next()
		if err != nil {
			return Publish{}, err
		}
		if !ok {
			break
		}
		switch pr.id {
		case propTopicAlias:
			p.TopicAlias = uint16(pr.num)
		case propResponseTopic:
			if !validTopicBytes(pr.data) {
				return Publish{}, fmt.Errorf("%w: invalid response topic", ErrMalformed)
			}
			p.ResponseTopic = string(pr.data)
		case propCorrelationData:
			p.CorrelationData = pr.data
		case propPayloadFormat:
			p.PayloadFormat = byte(pr.num)
		case propMessageExpiry:
			p.MessageExpiry, p.HasMessageExpiry = pr.num, true
		case propContentType:
			p.ContentType = string(pr.data)
		case propUserProperty:
			p.UserProperties = append(p.UserProperties, UserProperty{Key: string(pr.data), Value: string(pr.value)})
		}
	}
	if len(topic) == 0 && p.TopicAlias == 0 {
		return Publish{}, fmt.Errorf("%w: empty topic without topic alias", ErrMalformed)
	}
	p.Topic = string(topic)
	if !r.empty() {
		p.Payload = r.b[:len(r.b):len(r.b)]
	}
	return p, nil
}
