package mdclient

import (
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/mdclient/mdclient/codec"
	"github.com/mdclient/mdclient/engine"
)

// request is a PublishAsync call in flight: the engine's request and where its result
// goes, in one allocation.
type request struct {
	engine.Request
	ch      chan PublishResult
	closure string
	done    func(PublishResult) // the hooks', if any
	msg     Message             // the hooks' copy of the message, while they run
}

// fill validates m and copies it into the engine's request; it returns why the message
// can never be sent, if it cannot.
func (r *request) fill(m *Message) (engine.Fact, error) {
	if err := codec.CheckTopicName(m.Subject); err != nil {
		return engine.Invalid, fmt.Errorf("%w: subject %s: %w", ErrInvalidMessage, quoteSubject(m.Subject), err)
	}
	if m.ReplySubject != "" {
		if err := codec.CheckTopicName(m.ReplySubject); err != nil {
			return engine.Invalid, fmt.Errorf("%w: reply subject %s: %w", ErrInvalidMessage, quoteSubject(m.ReplySubject), err)
		}
		if len(m.Closure) > 65535 {
			return engine.Invalid, fmt.Errorf("%w: a closure sent as correlation data (with a reply subject) has at most 65535 bytes, not %d", ErrInvalidMessage, len(m.Closure))
		}
	}
	if fact, err := checkProperties(m.UserProperties); err != nil {
		return fact, err
	}
	switch {
	case m.QoS != QoSGuaranteed && m.QoS != QoSStandard:
		return engine.Invalid, fmt.Errorf("%w: unknown QoS %d", ErrInvalidMessage, m.QoS)
	case m.ContentType != "" && !codec.ValidString(m.ContentType):
		return engine.Invalid, fmt.Errorf("%w: content type %s: %w", ErrInvalidMessage, quoteSubject(m.ContentType), codec.CheckString(m.ContentType))
	case m.Expiry < 0 || m.Expiry > maxExpiry:
		return engine.Invalid, fmt.Errorf("%w: expiry %v: from 0 to %v", ErrInvalidMessage, m.Expiry, maxExpiry)
	case m.UTF8 && !utf8.Valid(m.Content):
		return engine.Invalid, fmt.Errorf("%w: UTF8 is set and the content is not UTF-8", ErrInvalidMessage)
	case len(m.Content) > codec.MaxPacketSize:
		return engine.TooLarge, fmt.Errorf("%w: %d bytes of content exceed MQTT's largest packet", ErrMessageTooLarge, len(m.Content))
	}
	r.Packet = codec.Publish{Topic: m.Subject, Payload: m.Content, Retain: m.Retained,
		ContentType: m.ContentType, UserProperties: m.UserProperties}
	if m.UTF8 {
		r.Packet.PayloadFormat = 1
	}
	if m.Expiry > 0 {
		r.Packet.MessageExpiry = uint32((m.Expiry + time.Second - 1) / time.Second) // rounded up
		r.Packet.HasMessageExpiry = true
	}
	r.AtMostOnce = m.QoS == QoSStandard
	if m.ReplySubject != "" {
		r.Packet.ResponseTopic = m.ReplySubject
		r.Packet.CorrelationData = unsafe.Slice(unsafe.StringData(m.Closure), len(m.Closure)) // the codec only reads it
		if r.Packet.CorrelationData == nil {
			r.Packet.CorrelationData = []byte{}
		}
	}
	return 0, nil
}

// checkProperties returns why user properties cannot be sent, if they cannot.
func checkProperties(props []UserProperty) (engine.Fact, error) {
	for i := range props {
		p := &props[i]
		if codec.ValidString(p.Key) && codec.ValidString(p.Value) {
			continue
		}
		if err := codec.CheckString(p.Key); err != nil {
			return engine.Invalid, fmt.Errorf("%w: user property %d: key %s: %w", ErrInvalidMessage, i, quoteSubject(p.Key), err)
		}
		return engine.Invalid, fmt.Errorf("%w: user property %d (key %s): value %s: %w", ErrInvalidMessage, i, quoteSubject(p.Key), quoteSubject(p.Value), codec.CheckString(p.Value))
	}
	return 0, nil
}

// maxExpiry is the longest Message Expiry Interval MQTT can carry: 2³²−1 seconds.
const maxExpiry = (1<<32 - 1) * time.Second

// quoteSubject quotes at most the first 64 bytes of a subject, for an error.
func quoteSubject(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}
