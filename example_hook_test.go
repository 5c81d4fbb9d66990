package mdclient_test

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// A hook that stamps every message with a property and times its publish; contrib/otel
// builds a tracing one the same way.
func ExampleWithHook() {
	broker, err := mdtest.NewServer()
	if err != nil {
		panic(err)
	}
	defer broker.Close()
	sub, err := broker.Subscribe("orders/#")
	if err != nil {
		panic(err)
	}
	defer sub.Close()

	stamp := func(ctx context.Context, m *mdclient.Message) func(mdclient.PublishResult) {
		// A new slice: the caller's is never written.
		m.UserProperties = append(slices.Clip(m.UserProperties), mdclient.UserProperty{Key: "producer", Value: "billing"})
		start := time.Now()
		return func(r mdclient.PublishResult) {
			_ = time.Since(start) // record it; this runs on a client goroutine: never block
			fmt.Println("done:", r.Status)
		}
	}
	c := mdclient.NewClient(mdclient.WithHook(stamp))
	defer c.Close()
	if err := c.SetServers([]string{broker.TCPAddr()}); err != nil {
		panic(err)
	}
	status, _ := c.Publish(context.Background(), mdclient.Message{Subject: "orders/new", Content: []byte("{}")})
	fmt.Println("publish:", status)
	fmt.Println("received with", (<-sub.Messages()).UserProperties)
	// Output:
	// done: NOTIFY_PUBLISH_OK
	// publish: NOTIFY_PUBLISH_OK
	// received with [{producer billing}]
}
