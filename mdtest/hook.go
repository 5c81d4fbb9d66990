package mdtest

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// basicHook implements the "Basic" entitlement rules, the 0x10 decision, the
// PUBACK encoding fixes and the delivery to in-process Subscriptions.
//
// How mochi v2.7.9 behaves without it (measured):
//   - mochi never answers 0x10 by itself: a QoS 1 PUBACK is built with
//     reason code 0x01 ("granted QoS 1", which is not a PUBACK reason code).
//   - The PUBACK encoder writes the reason code only when it is >= 0x80 or
//     when properties follow. A 0x01 or 0x10 PUBACK without properties thus
//     goes out as the two-byte form, which a client reads as 0x00.
//   - The PUBLISH's properties are copied onto the PUBACK. Response Topic and
//     Correlation Data are not PUBACK properties and are dropped by the
//     encoder, but User Properties are kept, and then the reason code is
//     written: a successful publish with User Properties is acknowledged
//     with 0x01.
//
// The fixes: Capabilities.Compatibilities.NoInheritedPropertiesOnAck stops
// the copying; OnPublish takes the routing decision and remembers, per
// connection, the packet identifier of a QoS 1 publish without subscribers;
// OnPacketEncode rewrites the PUBACK: 0x01 becomes 0x00 and, for the
// remembered packet identifier, 0x10 with a Reason String so that the
// encoder writes the reason code. Only Reason Strings reach the wire.
type basicHook struct {
	mqtt.HookBase
	srv   *Server
	token string
}

// ID identifies the hook in mochi's logs.
func (h *basicHook) ID() string { return "mdtest-basic-entitlement" }

// Provides lists the hook methods mochi must call.
func (h *basicHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPublish,
		mqtt.OnPublished, mqtt.OnWillSent, mqtt.OnPacketEncode:
		return true
	}
	return false
}

// OnConnectAuthenticate accepts every client and decides, once, whether it
// may publish.
func (h *basicHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	if c, ok := cl.Net.Conn.(*serverConn); ok {
		c.mayPublish.Store(h.token == "" ||
			string(pk.Connect.Password) == h.token ||
			string(pk.Connect.Username) == h.token)
	}
	return true
}

// OnACLCheck lets everyone subscribe and only entitled clients publish.
// mochi does not consult it for its inline client.
func (h *basicHook) OnACLCheck(cl *mqtt.Client, _ string, write bool) bool {
	if !write || h.token == "" {
		return true
	}
	c, ok := cl.Net.Conn.(*serverConn)
	return ok && c.mayPublish.Load()
}

// OnPublish runs for authorised publishes, before the PUBACK is built. It
// takes the routing decision: which Subscriptions receive the message and,
// for a QoS 1 publish from an MQTT 5 client, whether it matched no
// subscriber.
func (h *basicHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	c, ok := cl.Net.Conn.(*serverConn)
	if !ok {
		return pk, nil
	}
	if f, ok := h.srv.faults.match(pk.TopicName); ok {
		// Neither routed nor retained: what a server that refuses or loses a publish does.
		if f.drop || pk.FixedHeader.Qos == 0 || cl.Properties.ProtocolVersion != 5 {
			return pk, packets.ErrRejectPacket // no PUBACK
		}
		return pk, packets.Code{Code: f.code, Reason: reasonSetByTest}
	}
	r := h.srv.route(pk.TopicName)
	// Delivered now, before the PUBACK: mochi writes the PUBACK before it routes, so a
	// client that publishes the subject's next message on another connection once it
	// has the PUBACK could otherwise have that one delivered first.
	h.srv.deliver(pk, 0, r.gen)
	c.routeGen.Store(r.gen + 1)
	if pk.FixedHeader.Qos == 1 && cl.Properties.ProtocolVersion == 5 && !r.hasSubscr {
		c.noSubscribers.Store(uint32(pk.PacketID) + 1)
	} else {
		c.noSubscribers.Store(0)
	}
	return pk, nil
}

// OnPublished runs once mochi has routed a publish to its own subscribers.
// OnPublish has delivered it to the Subscriptions that existed when it
// decided, so that a PUBACK 0x10 really means nobody got the message; a
// retained message also goes to the younger ones now: those may have read the
// retained store before mochi updated it.
func (h *basicHook) OnPublished(cl *mqtt.Client, pk packets.Packet) {
	c, ok := cl.Net.Conn.(*serverConn)
	if !ok {
		h.srv.deliver(pk, 0, ^uint64(0)) // not seen by OnPublish
		return
	}
	if gen := c.routeGen.Swap(0); gen > 0 && pk.FixedHeader.Retain {
		h.srv.deliver(pk, gen, ^uint64(0))
	}
}

// OnWillSent delivers a published Will message to the matching
// Subscriptions.
func (h *basicHook) OnWillSent(_ *mqtt.Client, pk packets.Packet) {
	h.srv.deliver(pk, 0, ^uint64(0))
}

// OnPacketEncode fixes MQTT 5 PUBACKs just before mochi encodes them.
func (h *basicHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type != packets.Puback || pk.ProtocolVersion != 5 {
		return pk
	}
	reason := pk.ReasonCode
	if reason == packets.CodeGrantedQos1.Code {
		reason = packets.CodeSuccess.Code
	}
	if c, ok := cl.Net.Conn.(*serverConn); ok && reason == packets.CodeSuccess.Code &&
		c.noSubscribers.CompareAndSwap(uint32(pk.PacketID)+1, 0) {
		reason = packets.CodeNoMatchingSubscribers.Code
	}

	// A PUBACK may carry only a Reason String and User Properties. Keep the
	// Reason String of an error (mochi sets it), add one to 0x10 so that
	// the reason code is encoded, and send nothing else.
	props := packets.Properties{}
	switch {
	case reason >= packets.ErrUnspecifiedError.Code:
		props.ReasonString = pk.Properties.ReasonString
	case reason == packets.CodeNoMatchingSubscribers.Code:
		props.ReasonString = packets.CodeNoMatchingSubscribers.Reason
	}
	pk.ReasonCode = reason
	pk.Properties = props
	return pk
}
