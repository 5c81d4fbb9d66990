package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/mdclient/mdclient/mdtest"
)

const serveUsage = `Usage: mdpub serve [flags]

Runs the embedded MQTT 5 broker (mdtest) on free loopback ports, prints its addresses and
serves until SIGINT or SIGTERM. It behaves like a MigratoryData server in Basic
entitlement mode: anyone may connect and subscribe, only clients presenting the
allow-token (as MQTT password or user name) may publish, others get DENIED; a publish
that matches no subscriber gets NO_SUBSCRIBER.

Flags:
`

// serveCounted, when not nil, is called by serve's subscribers with the total they have
// received, after each message. mdtest hands a message to its subscribers after the
// publisher's PUBACK, so that a publisher cannot tell when the count includes it: a
// variable only so that tests can wait for the count.
var serveCounted func(total uint64)

// serve runs the embedded broker until ctx ends; it returns the exit code.
func serve(ctx context.Context, args []string, e env) int {
	fs := flag.NewFlagSet("mdpub serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	token := fs.String("allow-token", "", "the token allowed to publish (default $"+tokenEnv+"; none: anyone may publish); never printed")
	subscribe := fs.String("subscribe", "", "comma-separated topic filters of in-process subscribers, e.g. \"mdpub/#\" (they count the messages they receive)")
	receiveMax := fs.Uint("receive-maximum", uint(mdtest.DefaultReceiveMaximum), "Receive Maximum announced to clients (1–65535)")
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		var b strings.Builder
		b.WriteString(serveUsage)
		var flags strings.Builder
		fs.SetOutput(&flags)
		fs.PrintDefaults()
		b.WriteString(doubleDash(flags.String()))
		fmt.Fprint(e.stderr, b.String())
		return exitOK
	}
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err == nil && (*receiveMax < 1 || *receiveMax > 65535) {
		err = errors.New("--receive-maximum must be from 1 to 65535")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["allow-token"] && e.getenv != nil {
		*token = e.getenv(tokenEnv)
	}
	var filters []string
	for _, f := range strings.Split(*subscribe, ",") {
		if f = strings.TrimSpace(f); f != "" {
			filters = append(filters, f)
		}
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "mdpub serve: %v (mdpub serve -h for help)\n", err)
		return exitUsage
	}

	srv, err := mdtest.NewServer(mdtest.WithAllowToken(*token), mdtest.WithReceiveMaximum(uint16(*receiveMax)))
	if err != nil {
		fmt.Fprintf(e.stderr, "mdpub serve: %v\n", err)
		return exitUsage
	}
	defer srv.Close()
	var received atomic.Uint64
	drained := make(chan struct{}, len(filters)) // one per subscriber reader when it ends
	readers := 0
	stop := func() {
		srv.Close() // closes the subscriptions, which ends their readers
		for range readers {
			<-drained
		}
	}
	for _, f := range filters {
		sub, err := srv.Subscribe(f)
		if err != nil {
			stop()
			fmt.Fprintf(e.stderr, "mdpub serve: --subscribe %q: %v\n", f, err)
			return exitUsage
		}
		readers++
		go func() {
			defer func() { drained <- struct{}{} }()
			for range sub.Messages() {
				if n := received.Add(1); serveCounted != nil {
					serveCounted(n)
				}
			}
		}()
	}

	entitlement := "none: anyone may publish"
	if *token != "" {
		entitlement = "Basic: only the allow-token may publish (not shown)"
	}
	fmt.Fprintf(e.stdout, "mdpub serve: embedded MQTT 5 broker, entitlement %s\n", entitlement)
	fmt.Fprintf(e.stdout, "ws   %s\n", srv.WSAddr())
	fmt.Fprintf(e.stdout, "tcp  %s\n", srv.TCPAddr())
	if len(filters) > 0 {
		fmt.Fprintf(e.stdout, "subscribers on %s\n", strings.Join(filters, ", "))
	}
	tokenArg := ""
	if *token != "" {
		tokenArg = ` --token "$` + tokenEnv + `"`
	}
	fmt.Fprintf(e.stdout, "publish with: mdpub --servers %s%s\n", srv.WSAddr(), tokenArg)
	fmt.Fprintln(e.stdout, "serving until SIGINT (Ctrl-C) or SIGTERM")

	<-ctx.Done()
	stop()
	if len(filters) > 0 {
		fmt.Fprintf(e.stdout, "mdpub serve: stopped; the subscribers received %d messages\n", received.Load())
	} else {
		fmt.Fprintln(e.stdout, "mdpub serve: stopped")
	}
	return exitOK
}
