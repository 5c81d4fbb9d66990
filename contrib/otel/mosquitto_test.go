package mdotel_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/mosquittotest"
	"github.com/mdclient/mdclient/internal/mqttsub"
)

const (
	pubPassword = "pub-secret"
	subPassword = "sub-secret"
)

// TestMosquitto: against Debian's mosquitto (skipped when it is not installed, failed
// under CI), a span per outcome — OK, NO_SUBSCRIBER (mosquitto's PUBACK 0x10), DENIED
// (its ACL's 0x87), FAILED (0x95 over message_size_limit; over the announced Maximum
// Packet Size, refused before sending), TIMEOUT (a stopped broker) — and the traceparent
// read back by an independent subscriber carries the span's ids.
func TestMosquitto(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Config{
		Users: map[string]string{"pub": pubPassword, "sub": subPassword},
		ACL:   "user pub\ntopic write feed/#\ntopic write lonely/#\n\nuser sub\ntopic read feed/#\n",
		Extra: "message_size_limit 1000\nmax_packet_size 4000\n",
	})
	sub, err := mqttsub.Dial(b.TCPHostPort(), "otel-sub", "sub", subPassword, "feed/#")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	tel := newTelemetry(t)
	c := newClient(t, b.TCPAddr(), tel.hook(), mdclient.WithUsername("pub"))
	c.SetEntitlementToken(pubPassword)

	for _, o := range []outcome{
		{subject: "feed/ok", size: 4, timeout: 10 * time.Second, status: mdclient.NotifyPublishOK},
		{subject: "lonely/one", size: 1, timeout: 10 * time.Second, status: mdclient.NotifyPublishNoSubscriber},
		{subject: "forbidden/x", size: 1, timeout: 10 * time.Second, status: mdclient.NotifyPublishDenied, errType: "denied"},
		{subject: "feed/big", size: 2000, timeout: 10 * time.Second, status: mdclient.NotifyPublishFailed, errType: "rejected"},
	} {
		publishOutcome(t, c, o)
		checkSpan(t, tel.span(t, o.subject), o, b.TCPAddr())
	}
	huge := outcome{subject: "feed/huge", size: 5000, timeout: 10 * time.Second, status: mdclient.NotifyPublishFailed, errType: "message_too_large"}
	publishOutcome(t, c, huge)
	checkSpan(t, tel.span(t, huge.subject), huge, "")

	if !sub.Wait(10*time.Second, func(msgs []mqttsub.Msg) bool { return len(msgs) >= 1 }) {
		t.Fatal("the subscriber received nothing")
	}
	got := sub.Messages()[0]
	s := tel.span(t, "feed/ok")
	tps := propValues(got.UserProperties, "traceparent")
	if got.Topic != "feed/ok" || len(tps) != 1 {
		t.Fatalf("received %q with traceparents %q", got.Topic, tps)
	}
	if tps[0] != fmt.Sprintf("00-%s-%s-01", s.SpanContext.TraceID(), s.SpanContext.SpanID()) {
		t.Errorf("traceparent %s, want trace %s span %s", tps[0], s.SpanContext.TraceID(), s.SpanContext.SpanID())
	}

	// A broker that stops answering after the message was written: TIMEOUT.
	b.Stop()
	lost := outcome{subject: "feed/lost", size: 1, timeout: 300 * time.Millisecond, status: mdclient.NotifyPublishTimeout, errType: "timeout"}
	publishOutcome(t, c, lost)
	b.Continue()
	checkSpan(t, tel.span(t, lost.subject), lost, b.TCPAddr())
}
