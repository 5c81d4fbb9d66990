package mdtest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/mdclient/mdclient/codec"
)

// messagesBuffer is the capacity of the channel returned by
// Subscription.Messages. Messages beyond it wait in an unbounded queue.
const messagesBuffer = 64

// Received is a message delivered to a [Subscription]. Its slices are
// private copies; the test may keep and modify them.
type Received struct {
	// Topic is the topic name the message was published to.
	Topic string
	// Payload is the application message.
	Payload []byte
	// Retain is the RETAIN flag: as published for live messages (like an
	// MQTT subscription with Retain As Published), and true for the retained
	// messages delivered when the Subscription is created.
	Retain bool
	// ResponseTopic is the MQTT 5 Response Topic property ("" when absent).
	ResponseTopic string
	// CorrelationData is the MQTT 5 Correlation Data property (nil when
	// absent).
	CorrelationData []byte
	// UserProperties are the MQTT 5 User Properties, in order (nil when
	// absent); the type is mdclient.UserProperty's.
	UserProperties []codec.UserProperty
	// ContentType is the MQTT 5 Content Type property ("" when absent).
	ContentType string
	// MessageExpiry is the MQTT 5 Message Expiry Interval in seconds (0 when
	// absent).
	MessageExpiry uint32
	// PayloadFormat is the MQTT 5 Payload Format Indicator: 1 for UTF-8 text.
	PayloadFormat byte
}

// Subscription is an in-process subscriber attached with
// [Server.Subscribe]. It counts as a subscriber when the server decides
// whether a QoS 1 publish matched no subscriber (PUBACK 0x10).
//
// Which messages it receives: every client publish (any QoS) and every Will
// message on a matching topic, from the moment Subscribe returns. For a
// client publish the recipients are fixed when the server decides the
// PUBACK reason code, before the PUBACK is sent: a PUBACK 0x10 means no
// Subscription receives the message, and a Subscription created after the
// publisher got its PUBACK does not receive it (unless it is retained; see
// [Server.Subscribe]). mochi's $SYS statistics are not delivered.
//
// Delivery never blocks the broker and never drops a message: each matching
// message is appended to an unbounded in-memory queue which feeds the
// channel returned by Messages, in the order the server decided them: a
// message acknowledged before another was published, on any connection,
// arrives before it. A test that does not read only costs memory.
//
// mochi's own inline subscriptions are deliberately not used: in v2.7.9 an
// inline subscription to "#" or "+/..." also receives the $SYS topics, and
// one to "a/#" does not receive messages published to "a".
type Subscription struct {
	srv    *Server
	filter string
	seq    uint64 // registration order, from Server.subSeq

	out      chan Received
	wake     chan struct{} // capacity 1: "the queue may be non-empty"
	done     chan struct{} // closed by Close
	pumpDone chan struct{} // closed when the pump goroutine has exited

	mu     sync.Mutex // guards queue and closed
	queue  []Received
	closed bool

	closeOnce sync.Once
}

// Subscribe attaches an in-process subscriber to filter, written in MQTT
// topic filter syntax ("+" matches one level, a final "#" matches any number
// of levels, including none; filters starting with a wildcard do not match
// topics starting with "$"). Shared subscriptions ("$share/...") are not
// supported.
//
// Retained messages matching filter are delivered first, ordered by topic.
// A publish racing with Subscribe may then be delivered twice (retained and
// live) but is never lost.
func (s *Server) Subscribe(filter string) (*Subscription, error) {
	if err := validateFilter(filter); err != nil {
		return nil, err
	}
	sub := &Subscription{
		srv:      s,
		filter:   filter,
		out:      make(chan Received, messagesBuffer),
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		pumpDone: make(chan struct{}),
	}

	// Registering and reading the retained messages under the write lock
	// serialises with deliver. mochi stores a retained message before it
	// routes it, and routes retained messages to every Subscription, so a
	// retained publish is delivered live, found in the store, or both.
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.subSeq++
	sub.seq = s.subSeq
	s.subs[sub] = struct{}{}
	var retained []packets.Packet
	for _, pk := range s.broker.Topics.Retained.GetAll() {
		if isSysTopic(pk.TopicName) {
			continue // mochi's statistics, not client messages
		}
		if matchTopic(filter, pk.TopicName) {
			retained = append(retained, pk)
		}
	}
	slices.SortFunc(retained, func(a, b packets.Packet) int { return strings.Compare(a.TopicName, b.TopicName) })
	for _, pk := range retained {
		r := received(pk)
		r.Retain = true
		sub.push(r)
	}
	s.mu.Unlock()

	go sub.pump()
	return sub, nil
}

// Filter returns the topic filter the subscription was created with.
func (sub *Subscription) Filter() string { return sub.filter }

// Messages returns the channel on which matching messages arrive, in the
// order the broker routed them. The channel is buffered and backed by an
// unbounded queue (see [Subscription]). It is closed by [Subscription.Close]
// and by [Server.Close]; messages still queued at that point are discarded.
func (sub *Subscription) Messages() <-chan Received { return sub.out }

// Close detaches the subscriber, closes the Messages channel and discards
// the messages not yet read. It is safe to call more than once and always
// returns nil.
func (sub *Subscription) Close() error {
	sub.closeOnce.Do(func() {
		sub.srv.mu.Lock()
		delete(sub.srv.subs, sub)
		sub.srv.mu.Unlock()

		sub.mu.Lock()
		sub.closed = true
		sub.queue = nil
		sub.mu.Unlock()

		close(sub.done)
		<-sub.pumpDone
	})
	return nil
}

// push queues r without blocking.
func (sub *Subscription) push(r Received) {
	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		return
	}
	sub.queue = append(sub.queue, r)
	sub.mu.Unlock()
	select {
	case sub.wake <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// pump moves queued messages to the Messages channel until Close.
func (sub *Subscription) pump() {
	defer close(sub.pumpDone)
	defer close(sub.out)
	for {
		sub.mu.Lock()
		batch := sub.queue
		sub.queue = nil
		sub.mu.Unlock()

		for _, r := range batch {
			select {
			case sub.out <- r:
			case <-sub.done:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-sub.wake:
		case <-sub.done:
			return
		}
	}
}

// deliver hands a publish to every matching Subscription whose seq is from
// minSeq to maxSeq.
func (s *Server) deliver(pk packets.Packet, minSeq, maxSeq uint64) {
	if pk.TopicName == "" {
		return
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for sub := range s.subs {
		if minSeq <= sub.seq && sub.seq <= maxSeq && matchTopic(sub.filter, pk.TopicName) {
			sub.push(received(pk))
		}
	}
}

// received copies the parts of pk a Received exposes.
func received(pk packets.Packet) Received {
	r := Received{
		Topic:           pk.TopicName,
		Payload:         slices.Clone(pk.Payload),
		Retain:          pk.FixedHeader.Retain,
		ResponseTopic:   pk.Properties.ResponseTopic,
		CorrelationData: slices.Clone(pk.Properties.CorrelationData),
		ContentType:     pk.Properties.ContentType,
		MessageExpiry:   pk.Properties.MessageExpiryInterval,
		PayloadFormat:   pk.Properties.PayloadFormat,
	}
	for _, p := range pk.Properties.User {
		r.UserProperties = append(r.UserProperties, codec.UserProperty{Key: p.Key, Value: p.Val})
	}
	return r
}

// isSysTopic reports whether topic is one of mochi's $SYS topics.
func isSysTopic(topic string) bool {
	return topic == mqtt.SysPrefix || strings.HasPrefix(topic, mqtt.SysPrefix+"/")
}

// validateFilter checks filter against the MQTT topic filter rules.
func validateFilter(filter string) error {
	switch {
	case filter == "":
		return fmt.Errorf("mdtest: empty topic filter")
	case !utf8.ValidString(filter) || strings.ContainsRune(filter, 0):
		return fmt.Errorf("mdtest: topic filter %q is not valid UTF-8 without NUL", filter)
	case strings.HasPrefix(filter, "$share/"):
		return fmt.Errorf("mdtest: shared subscription %q is not supported", filter)
	}
	levels := strings.Split(filter, "/")
	for i, level := range levels {
		switch {
		case level == "#" && i != len(levels)-1:
			return fmt.Errorf("mdtest: topic filter %q: '#' must be the last level", filter)
		case level != "#" && level != "+" && strings.ContainsAny(level, "#+"):
			return fmt.Errorf("mdtest: topic filter %q: a wildcard must occupy a whole level", filter)
		}
	}
	return nil
}

// matchTopic reports whether topic matches the (valid) filter.
func matchTopic(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false // MQTT 5 §4.7.2
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true // matches the parent level and everything below it
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		switch {
		case !fmore && !tmore:
			return true
		case !fmore:
			return false // topic is deeper than filter
		case !tmore:
			return frest == "#" // "a/#" matches "a"
		}
		filter, topic = frest, trest
	}
}
