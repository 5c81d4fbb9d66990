package mdtest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/mdtest"
)

// connect returns a client of srv that has its first connection.
func connect(srv interface{ TCPAddr() string }, opts ...mdclient.Option) *mdclient.Client {
	c := mdclient.NewClient(opts...)
	if err := c.SetServers([]string{srv.TCPAddr()}); err != nil {
		log.Fatal(err)
	}
	for ev := range c.Events() {
		if ev.Type == mdclient.NotifyServerUp {
			break
		}
	}
	return c
}

// Every outcome a publishing client can get, from one embedded broker.
func ExampleServer_SetReasonCode() {
	srv, err := mdtest.NewServer()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	sub, err := srv.Subscribe("orders/#") // without a subscriber: NO_SUBSCRIBER
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	srv.SetReasonCode("orders/denied", 0x87) // not authorized
	srv.SetReasonCode("orders/nobody", 0x10) // no matching subscribers
	srv.SetReasonCode("orders/quota", 0x97)  // quota exceeded
	srv.DropAcks("orders/lost", true)        // never acknowledged
	c := connect(srv)
	defer c.Close()

	for _, subject := range []string{"orders/ok", "orders/denied", "orders/nobody", "orders/quota", "orders/lost"} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		status, _ := c.Publish(ctx, mdclient.Message{Subject: subject, Content: []byte("{}")})
		cancel()
		fmt.Println(subject, status)
	}
	// Output:
	// orders/ok NOTIFY_PUBLISH_OK
	// orders/denied NOTIFY_PUBLISH_DENIED
	// orders/nobody NOTIFY_PUBLISH_NO_SUBSCRIBER
	// orders/quota NOTIFY_PUBLISH_FAILED
	// orders/lost NOTIFY_PUBLISH_TIMEOUT
}

// A network failure: the client reports it and connects again by itself.
func ExampleServer_CutConnections() {
	srv, err := mdtest.NewServer()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	c := connect(srv)
	defer c.Close()

	srv.CutConnections()
	for ev := range c.Events() {
		fmt.Println(ev.Type)
		if ev.Type == mdclient.NotifyServerUp {
			break
		}
	}
	status, _ := c.Publish(context.Background(), mdclient.Message{Subject: "after/cut"})
	fmt.Println(status)
	// Output:
	// NOTIFY_SERVER_DOWN
	// NOTIFY_SERVER_UP
	// NOTIFY_PUBLISH_NO_SUBSCRIBER
}

// A stalled server: what was written while it stalled is unknown (TIMEOUT), and what is
// sent once it resumes is acknowledged.
func ExampleServer_Pause() {
	srv, err := mdtest.NewServer()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	c := connect(srv)
	defer c.Close()

	srv.Pause()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	status, _ := c.Publish(ctx, mdclient.Message{Subject: "stalled"})
	cancel()
	fmt.Println(status)
	srv.Resume()
	status, _ = c.Publish(context.Background(), mdclient.Message{Subject: "resumed"})
	fmt.Println(status)
	// Output:
	// NOTIFY_PUBLISH_TIMEOUT
	// NOTIFY_PUBLISH_NO_SUBSCRIBER
}

// A FAKE server for benchmarks of a pipeline that publishes: it acknowledges every
// publish at once and delivers nothing, so the numbers are the pipeline's own. In a
// benchmark, publish b.N messages in the loop the same way.
func ExampleNewSink() {
	sink, err := mdtest.NewSink()
	if err != nil {
		log.Fatal(err)
	}
	defer sink.Close()
	c := connect(sink)
	defer c.Close()

	results := make(chan mdclient.PublishResult, 1000)
	for i := range 1000 {
		c.PublishAsync(context.Background(), mdclient.PublishRequest{Result: results,
			Message: mdclient.Message{Subject: "bench/pipeline", Content: []byte{byte(i)}}})
	}
	ok := 0
	for range 1000 {
		if (<-results).Status == mdclient.NotifyPublishOK {
			ok++
		}
	}
	fmt.Println(ok, "acknowledged")
	// Output:
	// 1000 acknowledged
}
