package mdclient_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// A short-lived token, fetched before every connection attempt.
func ExampleWithTokenFunc() {
	broker, err := mdtest.NewServer(mdtest.WithAllowToken("jwt-of-today"))
	if err != nil {
		panic(err)
	}
	defer broker.Close()

	fetch := func(ctx context.Context) (string, error) {
		return "jwt-of-today", nil // ask the vault here; an error fails this attempt
	}
	c := mdclient.NewClient(mdclient.WithTokenFunc(fetch))
	defer c.Close()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	status, err := c.Publish(context.Background(), mdclient.Message{Subject: "orders/new"})
	fmt.Println(status, err != nil)
	// Output:
	// NOTIFY_PUBLISH_NO_SUBSCRIBER true
}

// Headers for a custom authoriser, sent with every WebSocket handshake.
func ExampleWithHTTPHeader() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()

	h := http.Header{}
	h.Set("X-Amz-CustomAuthorizer-Name", "my-authoriser")
	h.Set("Authorization", "Bearer my-token")
	c := mdclient.NewClient(mdclient.WithHTTPHeader(h))
	defer c.Close()
	if err := c.SetServers([]string{broker.WSAddr()}); err != nil {
		panic(err)
	}
	status, _ := c.Publish(context.Background(), mdclient.Message{Subject: "devices/42/state"})
	fmt.Println(status)
	// Output:
	// NOTIFY_PUBLISH_NO_SUBSCRIBER
}

// A dialer under every transport: this one counts its connections; a SOCKS5 proxy plugs
// in the same way (golang.org/x/net/proxy: proxy.SOCKS5(...).(proxy.ContextDialer).DialContext).
func ExampleWithDialer() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()

	var dials atomic.Int32
	var d net.Dialer
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}
	c := mdclient.NewClient(mdclient.WithDialer(dial))
	defer c.Close()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	status, _ := c.Publish(context.Background(), mdclient.Message{Subject: "a/b"})
	fmt.Println(status, dials.Load())
	// Output:
	// NOTIFY_PUBLISH_NO_SUBSCRIBER 1
}

// Following a redirect. The first server here is a stand-in for a load balancer: it
// answers every CONNECT with CONNACK 0x9C "use another server" and a Server Reference.
func ExampleWithFollowRedirects() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	target := strings.TrimPrefix(broker.TCPAddr(), "tcp://")
	balancer, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer balancer.Close()
	go func() {
		for {
			conn, err := balancer.Accept()
			if err != nil {
				return
			}
			conn.Read(make([]byte, 512)) // the CONNECT
			ref := append([]byte{0x1C, 0, byte(len(target))}, target...)
			connack := append([]byte{0x20, byte(3 + len(ref)), 0, 0x9C, byte(len(ref))}, ref...)
			conn.Write(connack)
			conn.Close()
		}
	}()

	c := mdclient.NewClient(mdclient.WithFollowRedirects(true))
	defer c.Close()
	if err := c.SetServers([]string{"tcp://" + balancer.Addr().String()}); err != nil {
		panic(err)
	}
	res := <-c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: "a/b"}})
	fmt.Println(res.Status, res.Server == broker.TCPAddr())
	ev := <-c.Events()
	fmt.Println(ev.Type, strings.Contains(ev.Err.Error(), "0x9c"))
	// Output:
	// NOTIFY_PUBLISH_NO_SUBSCRIBER true
	// NOTIFY_SERVER_DOWN true
}

// A rate limit under a broker's quota: at most 100 publishes a second after a burst of 10.
func ExampleWithRateLimit() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()

	c := mdclient.NewClient(mdclient.WithRateLimit(100, 10))
	defer c.Close()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	results := make(chan mdclient.PublishResult, 30)
	start := time.Now()
	for range 30 {
		c.PublishAsync(context.Background(), mdclient.PublishRequest{Message: mdclient.Message{Subject: "quota/x"}, Result: results})
	}
	for range 30 {
		<-results
	}
	fmt.Println(time.Since(start) >= 190*time.Millisecond) // 10 at once, 20 more at 100/s
	// Output:
	// true
}

// MQTT 5 metadata: user properties in order (a key may repeat), a content type, an
// expiry and the UTF-8 payload format, as a subscriber receives them.
func ExampleMessage_metadata() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("orders/#")
	defer sub.Close()

	c := mdclient.NewClient()
	defer c.Close()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	status, _ := c.Publish(context.Background(), mdclient.Message{
		Subject:        "orders/eu",
		Content:        []byte(`{"id": 7}`),
		UserProperties: []mdclient.UserProperty{{Key: "tenant", Value: "acme"}, {Key: "tag", Value: "a"}, {Key: "tag", Value: "b"}},
		ContentType:    "application/json",
		Expiry:         time.Minute,
		UTF8:           true,
	})
	m := <-sub.Messages()
	fmt.Println(status, m.UserProperties, m.ContentType, m.MessageExpiry, m.PayloadFormat)
	// Output:
	// NOTIFY_PUBLISH_OK [{tenant acme} {tag a} {tag b}] application/json 60 1
}
