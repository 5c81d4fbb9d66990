package mdtest_test

import (
	"fmt"
	"log"
	"net/url"

	"github.com/mdclient/mdclient/mdtest"
)

// ExampleNewServer starts a broker on free loopback ports, shows the shape
// of its two addresses and closes it.
func ExampleNewServer() {
	srv, err := mdtest.NewServer(mdtest.WithAllowToken("secret-token"))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	tcp, err := url.Parse(srv.TCPAddr()) // tcp://127.0.0.1:PORT
	if err != nil {
		log.Fatal(err)
	}
	ws, err := url.Parse(srv.WSAddr()) // ws://127.0.0.1:PORT/mqtt
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(tcp.Scheme, tcp.Hostname(), tcp.Port() != "0")
	fmt.Println(ws.Scheme, ws.Hostname(), ws.Path, ws.Port() != tcp.Port())

	// An in-process subscriber; it makes publishes to matching topics get
	// PUBACK 0x00 instead of 0x10 and receives them on sub.Messages().
	sub, err := srv.Subscribe("sensors/+/temperature")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	fmt.Println(sub.Filter())

	// Output:
	// tcp 127.0.0.1 true
	// ws 127.0.0.1 /mqtt true
	// sensors/+/temperature
}
