package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mdclient/mdclient/internal/mosquittotest"
	"github.com/mdclient/mdclient/internal/mqttsub"
)

func TestPayloadHeaderRoundTrip(t *testing.T) {
	b := filler(40)
	sent := time.Date(2030, 1, 2, 3, 4, 5, 678901234, time.UTC)
	putHeader(b, 1<<40+5, sent.UnixNano(), 70000)
	h, err := decodeHeader(b)
	if err != nil || h.seq != 1<<40+5 || !h.sent.Equal(sent) || h.client != 70000 {
		t.Fatalf("decoded %+v, %v", h, err)
	}
	if string(b[headerLen:]) != string(filler(40)[headerLen:]) {
		t.Errorf("the filler after the header changed: %q", b[headerLen:])
	}
	if want := "\x00\x00\x01\x00\x00\x00\x00\x05"; string(b[:8]) != want {
		t.Errorf("sequence bytes % x, want big-endian % x", b[:8], want)
	}
	for _, bad := range [][]byte{nil, b[:headerLen-1], filler(64)} {
		if _, err := decodeHeader(bad); err != errNoHeader {
			t.Errorf("%q: %v, want errNoHeader", bad, err)
		}
	}
}

// received is a message as the test's subscriber saw it.
type received struct {
	topic string
	h     header
	at    time.Time // when the subscriber had it (a little after it arrived)
	size  int
}

// subscribeAll collects from s, until want messages came, what each carries and when it
// came.
func subscribeAll(t *testing.T, s *mqttsub.Sub, want int) []received {
	t.Helper()
	var got []received
	ok := s.Wait(deadline, func(msgs []mqttsub.Msg) bool {
		now := time.Now()
		for _, m := range msgs[len(got):] {
			h, err := decodeHeader(m.Payload)
			if err != nil {
				t.Fatalf("message on %q: %v", m.Topic, err)
			}
			got = append(got, received{topic: m.Topic, h: h, at: now, size: len(m.Payload)})
		}
		return len(got) >= want
	})
	if !ok {
		t.Fatalf("the subscriber got %d messages, want %d (connection: %v)", len(got), want, s.Err())
	}
	return got
}

// TestPayloadHeaderReadBySubscriber: an independent MQTT 5 subscriber (internal/mqttsub)
// reads from each message's header which client sent it, its place in that client's
// stream (every number once, in order on the client's subject) and when it was due, and
// so the latency, against the embedded broker and against mosquitto.
func TestPayloadHeaderReadBySubscriber(t *testing.T) {
	t.Run("embedded broker", func(t *testing.T) {
		srv := broker(t, "tok")
		checkHeaderRun(t, srv.TCPAddr(), strings.TrimPrefix(srv.TCPAddr(), "tcp://"), "tok")
	})
	t.Run("mosquitto", func(t *testing.T) {
		b := mosquittotest.Start(t, mosquittotest.Config{MaxInflight: 100})
		checkHeaderRun(t, b.TCPAddr(), b.TCPHostPort(), "")
	})
}

// checkHeaderRun runs mdpub against server with a subscriber at hostPort.
func checkHeaderRun(t *testing.T, server, hostPort, token string) {
	const clients, count, rate, size = 3, 600, 3000, 40
	sub, err := mqttsub.Dial(hostPort, "mdpub-header-sub", "", "", "load/#")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	before := time.Now()
	code, stdout, stderr := mdpub(t, "--servers", server, "--token", token, "--clients", strconv.Itoa(clients), "--connections", "2",
		"--subject", "load/%i", "--payload-header", "--size", strconv.Itoa(size), "--count", strconv.Itoa(count),
		"--rate", strconv.Itoa(rate), "--json")
	after := time.Now()
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	var sum summary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if sum.Clients != clients || sum.Connections != 2 || sum.ConnectionsUp != 2*clients || sum.LatencyFrom != "due" || !sum.PayloadHeader {
		t.Errorf("summary %+v", sum)
	}
	got := subscribeAll(t, sub, count)

	perClient := map[uint32][]received{}
	for _, r := range got {
		if r.size != size {
			t.Errorf("%d-byte message, want %d", r.size, size)
		}
		if want := fmt.Sprintf("load/%d", r.h.client); r.topic != want {
			t.Errorf("client %d's message on %q, want %q", r.h.client, r.topic, want)
		}
		perClient[r.h.client] = append(perClient[r.h.client], r)
	}
	if len(perClient) != clients {
		t.Fatalf("messages from clients %v, want 1 to %d", perClient, clients)
	}
	for c, rs := range perClient {
		if c < 1 || c > clients {
			t.Fatalf("client number %d", c)
		}
		if n := uint64(len(rs)); n < sum.PerClient.Min || n > sum.PerClient.Max {
			t.Errorf("client %d: %d messages, the summary says %d to %d", c, n, sum.PerClient.Min, sum.PerClient.Max)
		}
		for i, r := range rs {
			// In order, no gap, no repeat (no failover here): the i-th is number i+1.
			if r.h.seq != uint64(i+1) {
				t.Fatalf("client %d: message %d carries number %d", c, i+1, r.h.seq)
			}
			if r.h.sent.Before(before) || r.h.sent.After(after) {
				t.Errorf("client %d message %d: send time %v outside the run [%v, %v]", c, r.h.seq, r.h.sent, before, after)
			}
			if latency := r.at.Sub(r.h.sent); latency < 0 || latency > deadline {
				t.Errorf("client %d message %d: latency %v", c, r.h.seq, latency)
			}
			if i > 0 && r.h.sent.Before(rs[i-1].h.sent) {
				t.Errorf("client %d: message %d was due before message %d", c, r.h.seq, rs[i-1].h.seq)
			}
		}
		// Open loop: a client's messages are due clients/rate apart; the last of them no
		// earlier than that schedule says, less the millisecond a message may go early.
		span := rs[len(rs)-1].h.sent.Sub(rs[0].h.sent)
		if want := time.Duration(len(rs)-1) * time.Second * clients / rate; span < want-time.Millisecond {
			t.Errorf("client %d: its messages span %v, the schedule %v", c, span, want)
		}
	}
}
