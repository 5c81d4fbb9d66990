//go:build unix

package ejabberdtest

import (
	"testing"

	"github.com/mdclient/mdclient/internal/mqttsub"
)

// Msg is one PUBLISH received by a [Sub].
type Msg = mqttsub.Msg

// Ack is a node's answer to [Node.Publish].
type Ack = mqttsub.Ack

// Sub is a small MQTT 5 subscriber connected over TCP to one node, created by
// [Node.Subscribe]. It acknowledges every QoS 1 message and keeps all it received.
type Sub struct {
	*mqttsub.Sub
	node *Node
}

// Subscribe connects to the node's MQTT listener as user, subscribes to filter with QoS 1
// and returns once the node has acknowledged the subscription. A t.Cleanup closes it.
func (n *Node) Subscribe(t testing.TB, user, password, filter string) *Sub {
	t.Helper()
	s, err := mqttsub.Dial(n.TCPHostPort(), "ejabberdtest-sub-"+randomHex(6), user, password, filter)
	if err != nil {
		t.Fatalf("ejabberdtest: subscribing to %q on %s: %v", filter, n.name, err)
	}
	t.Cleanup(s.Close)
	return &Sub{Sub: s, node: n}
}

// Node returns the node the subscriber is connected to.
func (s *Sub) Node() *Node { return s.node }

// Publish connects to the node's MQTT listener as user, publishes payload to topic with
// QoS 1, and returns the reason codes of the CONNACK and the PUBACK. It disconnects before
// returning.
func (n *Node) Publish(user, password, topic string, payload []byte) (Ack, error) {
	return mqttsub.Publish(n.TCPHostPort(), "ejabberdtest-pub-"+randomHex(6), user, password, topic, payload)
}
