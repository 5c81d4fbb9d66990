// Package mdtest provides an embedded MQTT 5 broker for tests, examples and
// command-line tools, in the way net/http/httptest provides an HTTP server.
//
// A [Server] behaves like a MigratoryData server running in "Basic"
// entitlement mode:
//
//   - Anyone may connect: CONNECT credentials are never checked.
//   - Anyone may subscribe.
//   - Only clients that presented the allow-token (see [WithAllowToken]) may
//     publish. A client presented the token when its MQTT password equals it
//     or when its MQTT username equals it. A QoS 1 publish from any other
//     client is answered with PUBACK reason code 0x87 (Not authorized) and is
//     not delivered; a QoS 0 publish from such a client is silently dropped.
//     With the default empty token everyone may publish.
//   - An authorised QoS 1 publish that matches no subscriber is answered with
//     PUBACK reason code 0x10 (No matching subscribers); otherwise the PUBACK
//     carries reason code 0x00 (Success). Both hold whether or not the PUBLISH
//     carried properties such as Response Topic or Correlation Data.
//
// The server listens on the loopback interface only, on ports chosen by the
// operating system: one plain TCP listener ([Server.TCPAddr]) and one
// WebSocket listener ([Server.WSAddr]) serving the path /mqtt with the
// WebSocket subprotocol "mqtt".
//
// The broker engine is github.com/mochi-mqtt/server/v2 (v2.7.9). mdtest adds
// the entitlement rules above, its own listeners (mochi's WebSocket listener
// cannot report a port chosen by the system) and works around mochi defects:
// PUBACK reason codes that never reach the wire, and a deadlock when clients
// come and go during shutdown. See [Server] for the protocol details visible
// to clients.
//
// A test can observe traffic without a network client: [Server.Subscribe]
// attaches an in-process subscriber that counts as a subscriber for the 0x10
// decision and delivers every matching message on a channel.
//
// Faults a test needs, without a network proxy: [Server.SetReasonCode] answers chosen
// topics with any PUBACK code (so a client sees all five outcomes), [Server.DropAcks]
// never answers them, [Server.CutConnections] breaks every connection as a network
// would, [Server.Pause] and [Server.Resume] stall and restart the server. [NewSink] is
// a FAKE server that acknowledges everything at once, for benchmarks of a producer's own
// pipeline.
//
// Typical use:
//
//	srv, err := mdtest.NewServer(mdtest.WithAllowToken("secret"))
//	if err != nil {
//		t.Fatal(err)
//	}
//	t.Cleanup(func() { _ = srv.Close() })
//	sub, err := srv.Subscribe("sensors/#")
//	...
//	// connect the client under test to srv.TCPAddr() or srv.WSAddr(),
//	// publish, then read sub.Messages() with a deadline.
package mdtest
