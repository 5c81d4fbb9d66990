package mdclient_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// Publish one message and wait for its outcome, against an embedded broker.
func ExampleClient_Publish() {
	broker, err := mdtest.NewServer(mdtest.WithAllowToken("secret"))
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("sport/#")
	defer sub.Close()

	c := mdclient.NewClient()
	defer c.Close()
	c.SetEntitlementToken("secret")
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	status, err := c.Publish(ctx, mdclient.Message{Subject: "sport/football", Content: []byte("1-0")})
	fmt.Println(status, err)
	status, err = c.Publish(ctx, mdclient.Message{Subject: "weather/today", Content: []byte("sun")})
	fmt.Println(status, errors.Is(err, mdclient.ErrNoSubscriber))
	// Output:
	// NOTIFY_PUBLISH_OK <nil>
	// NOTIFY_PUBLISH_NO_SUBSCRIBER true
}

// A pipeline: a producer hands requests in, one select loop reads every result and the
// server events from their channels.
func ExampleClient_PublishAsync() {
	broker, err := mdtest.NewServer(mdtest.WithAllowToken("secret"))
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, _ := broker.Subscribe("prices/#")
	defer sub.Close()

	c := mdclient.NewClient()
	defer c.Close()
	c.SetEntitlementToken("secret")
	if err := c.SetServers([]string{broker.WSAddr()}); err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	const n = 1000
	results := make(chan mdclient.PublishResult, 128)
	go func() {
		for i := range n {
			m := mdclient.Message{Subject: "prices/eurusd", Content: fmt.Appendf(nil, "%d", i), Closure: fmt.Sprint(i)}
			c.PublishAsync(ctx, mdclient.PublishRequest{Message: m, Result: results})
		}
	}()
	ok := 0
	for got := 0; got < n; {
		select {
		case r := <-results:
			got++
			if r.Status == mdclient.NotifyPublishOK {
				ok++
			}
		case ev := <-c.Events():
			_ = ev // NOTIFY_SERVER_UP or NOTIFY_SERVER_DOWN: log ev.Type, ev.Server, ev.Err
		case <-ctx.Done():
			fmt.Println("gave up:", ctx.Err())
			return
		}
	}
	fmt.Println(ok, "of", n, "published")
	// Output:
	// 1000 of 1000 published
}

// Servers are "[weight ]address"; an entry that does not parse is named in the error.
func ExampleClient_SetServers() {
	c := mdclient.NewClient()
	defer c.Close()
	err := c.SetServers([]string{"80 tcp://broker1:1883", "20 ws://broker2:8080", "broker3"})
	fmt.Println(errors.Is(err, mdclient.ErrInvalidServer))
	fmt.Println(err)
	// Output:
	// true
	// mdclient: invalid server "broker3": want host:port
}
