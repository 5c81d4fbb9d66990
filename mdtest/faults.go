package mdtest

import (
	"net"
	"slices"
	"sync"
)

// reasonSetByTest is the Reason String of a PUBACK code set with SetReasonCode.
const reasonSetByTest = "mdtest: reason code set by SetReasonCode"

// faults is a Server's test kit: PUBACK codes and lost acknowledgements by topic filter,
// and the pause gate of every connection's reads. Safe for concurrent use.
type faults struct {
	mu     sync.RWMutex
	rules  []fault       // in the order set: the latest one matching a topic decides
	paused chan struct{} // non-nil while paused; closed by Resume
}

// fault is one rule of SetReasonCode (code) or DropAcks (drop).
type fault struct {
	filter string
	code   byte
	drop   bool
}

// SetReasonCode makes the server answer every QoS 1 publish whose topic matches
// topicFilter with a PUBACK carrying code, without delivering or retaining the message,
// as a server refusing it would: 0x87 reads as NOTIFY_PUBLISH_DENIED, 0x10 as
// NOTIFY_PUBLISH_NO_SUBSCRIBER, 0x97 (quota exceeded) or any other code from 0x80 as
// NOTIFY_PUBLISH_FAILED. Code 0 removes the rule for topicFilter. When several rules
// (of SetReasonCode and DropAcks) match a topic, the one set last decides. An invalid
// filter matches nothing. It applies to publishes the server reads from now on.
func (s *Server) SetReasonCode(topicFilter string, code byte) {
	s.faults.set(fault{filter: topicFilter, code: code}, code != 0)
}

// DropAcks makes the server swallow every publish whose topic matches topicFilter when on
// is true: no PUBACK at all, no delivery, as a server that loses it; the client's
// outcome is NOTIFY_PUBLISH_TIMEOUT when its context ends. DropAcks(topicFilter, false)
// removes the rule. See SetReasonCode for several rules.
func (s *Server) DropAcks(topicFilter string, on bool) {
	s.faults.set(fault{filter: topicFilter, drop: true}, on)
}

// CutConnections closes every client connection now, without DISCONNECT or a WebSocket
// close frame, as a network failure would. Clients may connect again at once.
func (s *Server) CutConnections() {
	s.tcp.cutAll()
	s.ws.cutAll()
}

// Pause stops the server reading from its clients, as a stalled server: what they send
// waits in the network, nothing is answered, and keep-alive pings go unanswered too.
// New connections are accepted but get no CONNACK. Resume undoes it; Close resumes.
func (s *Server) Pause() {
	s.faults.mu.Lock()
	if s.faults.paused == nil {
		s.faults.paused = make(chan struct{})
	}
	s.faults.mu.Unlock()
}

// Resume lets a paused server go on reading; what waited is processed in order.
func (s *Server) Resume() { s.faults.resume() }

func (f *faults) resume() {
	f.mu.Lock()
	if f.paused != nil {
		close(f.paused)
		f.paused = nil
	}
	f.mu.Unlock()
}

// set replaces the rule of the same kind for r.filter, and keeps r when on.
func (f *faults) set(r fault, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = slices.DeleteFunc(f.rules, func(x fault) bool { return x.filter == r.filter && x.drop == r.drop })
	if on && validateFilter(r.filter) == nil {
		f.rules = append(f.rules, r)
	}
}

// match returns the rule that decides for topic, if any.
func (f *faults) match(topic string) (fault, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for i := len(f.rules) - 1; i >= 0; i-- {
		if matchTopic(f.rules[i].filter, topic) {
			return f.rules[i], true
		}
	}
	return fault{}, false
}

// wait returns once the server is not paused, or with net.ErrClosed once done is closed.
func (f *faults) wait(done <-chan struct{}) error {
	f.mu.RLock()
	gate := f.paused
	f.mu.RUnlock()
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-done:
		return net.ErrClosed
	}
}
