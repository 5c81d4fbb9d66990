package mdclient_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// A client with options. It connects nowhere until SetServers.
func ExampleNewClient() {
	broker, err := mdtest.NewServer(mdtest.WithAllowToken("secret"))
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("orders/#")
	defer sub.Close()

	c := mdclient.NewClient(
		mdclient.WithClientID("orders-publisher-1"),
		mdclient.WithPublishTimeout(3*time.Second), // for contexts without a deadline
		mdclient.WithMaxInflight(64),               // at most 64 unacknowledged publishes
		mdclient.WithConnectTimeout(2*time.Second),
	)
	defer c.Close()
	c.SetEntitlementToken("secret")
	if err := c.SetServers([]string{broker.WSAddr()}); err != nil {
		panic(err)
	}
	status, err := c.Publish(context.Background(), mdclient.Message{Subject: "orders/eu", Content: []byte(`{"id":1}`)})
	fmt.Println(status, err)
	// Output:
	// NOTIFY_PUBLISH_OK <nil>
}

// The entitlement token decides who may publish. Against a server in Basic entitlement
// mode, a client with another token is denied.
func ExampleClient_SetEntitlementToken() {
	broker, err := mdtest.NewServer(mdtest.WithAllowToken("right-token"))
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("news")
	defer sub.Close()

	for _, token := range []string{"wrong-token", "right-token"} {
		c := mdclient.NewClient()
		c.SetEntitlementToken(token) // before SetServers: it applies from the next connection on
		if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
			panic(err)
		}
		status, err := c.Publish(context.Background(), mdclient.Message{Subject: "news", Content: []byte("hello")})
		fmt.Println(status, errors.Is(err, mdclient.ErrDenied))
		c.Close()
	}
	// Output:
	// NOTIFY_PUBLISH_DENIED true
	// NOTIFY_PUBLISH_OK false
}

// Events reports the servers going up and down. Here the only server shuts down.
func ExampleClient_Events() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()

	c := mdclient.NewClient()
	defer c.Close()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	ev := <-c.Events()
	fmt.Println(ev.Type, ev.Server == broker.TCPAddr(), ev.Err)

	broker.Close() // sends DISCONNECT (server shutting down) and stops listening
	ev = <-c.Events()
	fmt.Println(ev.Type, ev.Server == broker.TCPAddr())
	// Why it went down, without importing a sub-package: the DISCONNECT's reason code.
	var disconnect *mdclient.ServerDisconnectError
	if errors.As(ev.Err, &disconnect) {
		fmt.Printf("DISCONNECT 0x%02x\n", disconnect.Code)
	}
	// Output:
	// NOTIFY_SERVER_UP true <nil>
	// NOTIFY_SERVER_DOWN true
	// DISCONNECT 0x8b
}

// Close ends the client: it waits for the results of the messages in flight (up to the
// drain timeout), disconnects, and leaves no goroutine behind. Later publishes fail with
// ErrClosed, and the Events channel is closed.
func ExampleClient_Close() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("#")
	defer sub.Close()

	c := mdclient.NewClient(mdclient.WithDrainTimeout(2 * time.Second))
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	status, _ := c.Publish(context.Background(), mdclient.Message{Subject: "ticks", Content: []byte("1")})
	fmt.Println(status)
	fmt.Println("close:", c.Close())

	status, err = c.Publish(context.Background(), mdclient.Message{Subject: "ticks", Content: []byte("2")})
	fmt.Println(status, errors.Is(err, mdclient.ErrClosed))
	for range c.Events() { // the NOTIFY_SERVER_UP still buffered, then the end
	}
	fmt.Println("events channel closed")
	// Output:
	// NOTIFY_PUBLISH_OK
	// close: <nil>
	// NOTIFY_PUBLISH_FAILED true
	// events channel closed
}

// Stats is a snapshot of the client's counters, cheap enough to poll every second.
func ExampleClient_Stats() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("prices/#")
	defer sub.Close()

	c := mdclient.NewClient()
	defer c.Close()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	ctx := context.Background()
	for range 3 {
		c.Publish(ctx, mdclient.Message{Subject: "prices/eurusd", Content: []byte("1.08")})
	}
	c.Publish(ctx, mdclient.Message{Subject: "nobody/listens", Content: []byte("?")})
	c.Publish(ctx, mdclient.Message{Subject: "bad/+/subject", Content: []byte("!")}) // bad input: FAILED, never accepted

	st := c.Stats()
	fmt.Printf("accepted %d: ok %d, no subscriber %d, failed %d\n", st.Accepted, st.OK, st.NoSubscriber, st.Failed)
	fmt.Printf("in flight %d, queued %d, reconnects %d\n", st.InFlight, st.Queued, st.Reconnects)
	fmt.Println("connected to the broker:", st.Server == broker.TCPAddr(), "- bytes written:", st.BytesWritten > 0)
	// Output:
	// accepted 4: ok 3, no subscriber 1, failed 1
	// in flight 0, queued 0, reconnects 0
	// connected to the broker: true - bytes written: true
}

// A reply subject travels as the MQTT 5 Response Topic, and the closure then goes along
// as Correlation Data, so that a responder can tag its reply.
func ExampleMessage() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("quotes/request")
	defer sub.Close()

	c := mdclient.NewClient()
	defer c.Close()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	res := <-c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{
		Subject:      "quotes/request",
		Content:      []byte("EURUSD"),
		Closure:      "req-42",
		ReplySubject: "quotes/reply/client-7",
		Retained:     true,
	}})
	fmt.Println(res.Status, res.Closure)

	m := <-sub.Messages()
	fmt.Printf("%s %q reply to %s, correlation %s, retained %v\n", m.Topic, m.Payload, m.ResponseTopic, m.CorrelationData, m.Retain)
	// Output:
	// NOTIFY_PUBLISH_OK req-42
	// quotes/request "EURUSD" reply to quotes/reply/client-7, correlation req-42, retained true
}

// Some brokers say "not allowed" with another reason code than 0x87: ejabberd answers a
// publish its access rules forbid with 0x90 (Topic Name invalid). Naming the code makes
// such answers NOTIFY_PUBLISH_DENIED instead of NOTIFY_PUBLISH_FAILED.
func ExampleWithDeniedReasonCodes() {
	addr, stop := fakeBrokerAnswering(0x90) // a stand-in for such a broker: every PUBACK carries 0x90
	defer stop()

	for _, opts := range [][]mdclient.Option{nil, {mdclient.WithDeniedReasonCodes(0x90)}} {
		c := mdclient.NewClient(opts...)
		if err := c.SetServers([]string{addr}); err != nil {
			panic(err)
		}
		status, err := c.Publish(context.Background(), mdclient.Message{Subject: "muc/room", Content: []byte("hi")})
		fmt.Println(status, errors.Is(err, mdclient.ErrDenied))
		c.Close()
	}
	// Output:
	// NOTIFY_PUBLISH_FAILED false
	// NOTIFY_PUBLISH_DENIED true
}

// A server that never acknowledges: the message was written, so when the publish timeout
// ends its outcome is NOTIFY_PUBLISH_TIMEOUT, "it may or may not have been published".
func ExampleWithPublishTimeout() {
	addr, stop := fakeBrokerAnswering(-1) // reads every PUBLISH, answers none
	defer stop()

	c := mdclient.NewClient(mdclient.WithPublishTimeout(300 * time.Millisecond))
	defer c.Close()
	if err := c.SetServers([]string{addr}); err != nil {
		panic(err)
	}
	<-c.Events() // NOTIFY_SERVER_UP: connected, so the message will be written
	status, err := c.Publish(context.Background(), mdclient.Message{Subject: "alerts", Content: []byte("!")})
	fmt.Println(status, errors.Is(err, mdclient.ErrTimeout))
	// Output:
	// NOTIFY_PUBLISH_TIMEOUT true
}

// Brokers that authorise by user name get the token there instead of in the password.
func ExampleWithTokenInUsername() {
	broker, err := mdtest.NewServer(mdtest.WithAllowToken("secret")) // accepts the token in either place
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("logs")
	defer sub.Close()

	c := mdclient.NewClient(mdclient.WithTokenInUsername())
	defer c.Close()
	c.SetEntitlementToken("secret")
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	status, _ := c.Publish(context.Background(), mdclient.Message{Subject: "logs", Content: []byte("up")})
	fmt.Println(status)
	// Output:
	// NOTIFY_PUBLISH_OK
}

// fakeBrokerAnswering starts a FAKE, minimal MQTT 5 server on loopback for the examples that need
// an answer mdtest does not give: it accepts every CONNECT and acknowledges every QoS 1
// PUBLISH with reason code reason, or with nothing when reason is negative. stop closes
// it and waits for its goroutines.
func fakeBrokerAnswering(reason int) (addr string, stop func()) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[nc] = true
			mu.Unlock()
			wg.Go(func() {
				defer nc.Close()
				serveFake(nc, reason)
			})
		}
	})
	return "tcp://" + l.Addr().String(), func() {
		l.Close()
		mu.Lock()
		for nc := range conns {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	}
}

// serveFake speaks just enough MQTT 5 on one connection for fakeBrokerAnswering.
func serveFake(nc net.Conn, reason int) {
	r := bufio.NewReader(nc)
	for {
		header, err := r.ReadByte()
		if err != nil {
			return
		}
		size, shift := 0, 0
		for { // the remaining length, a variable byte integer
			b, err := r.ReadByte()
			if err != nil || shift > 21 {
				return
			}
			size |= int(b&0x7f) << shift
			if b&0x80 == 0 {
				break
			}
			shift += 7
		}
		body := make([]byte, size)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		var answer []byte
		switch header >> 4 {
		case 1: // CONNECT: CONNACK, success, no properties
			answer = []byte{0x20, 3, 0, 0, 0}
		case 3: // PUBLISH
			topicLen := int(body[0])<<8 | int(body[1])
			if qos := header >> 1 & 3; qos == 1 && reason >= 0 {
				id := body[2+topicLen : 4+topicLen]
				answer = []byte{0x40, 3, id[0], id[1], byte(reason)} // PUBACK with a reason code
			}
		case 12: // PINGREQ
			answer = []byte{0xd0, 0}
		case 14: // DISCONNECT
			return
		}
		if answer != nil {
			if _, err := nc.Write(answer); err != nil {
				return
			}
		}
	}
}
