package mdclient_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
)

func TestMosquittoOutcomes(t *testing.T) {
	b := startMosquitto(t)
	sub := b.Subscribe(t, "sub", subPassword, "allowed/#")
	transports(t, b.WSAddr(), b.TCPAddr(), func(t *testing.T, addr string) {
		c := newClient(t, allowToken, []string{addr}, mdclient.WithUsername("pub"))
		ctx := ctxTimeout(t, 10*time.Second)

		content := []byte("bytes \x00\x01\xfe\xff unchanged")
		st, err := c.Publish(ctx, mdclient.Message{Subject: "allowed/news", Content: content,
			ReplySubject: "allowed/replies", Closure: "corr-1"})
		wantStatus(t, st, err, mdclient.NotifyPublishOK, nil)
		got := sub.Next(t)
		if got.Topic != "allowed/news" || !bytes.Equal(got.Payload, content) {
			t.Fatalf("mosquitto_sub got %q %q, want %q %q", got.Topic, got.Payload, "allowed/news", content)
		}
		if got.ResponseTopic != "allowed/replies" || string(got.CorrelationData) != "corr-1" {
			t.Fatalf("mosquitto_sub got response topic %q correlation data %q", got.ResponseTopic, got.CorrelationData)
		}

		st, err = c.Publish(ctx, mdclient.Message{Subject: "lonely/one", Content: []byte("x")})
		wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)

		st, err = c.Publish(ctx, mdclient.Message{Subject: "forbidden/x", Content: []byte("x")})
		wantStatus(t, st, err, mdclient.NotifyPublishDenied, mdclient.ErrDenied)

		// Above message_size_limit: mosquitto answers with a PUBACK failure code.
		res := <-c.PublishAsync(ctx, mdclient.PublishRequest{Message: mdclient.Message{Subject: "allowed/big", Content: make([]byte, 2000)}})
		wantStatus(t, res.Status, res.Err, mdclient.NotifyPublishFailed, mdclient.ErrFailed)
		if res.Server != addr {
			t.Errorf("server %q answered, want %q", res.Server, addr)
		}
		// Above the Maximum Packet Size: refused before anything is written.
		st, err = c.Publish(ctx, mdclient.Message{Subject: "allowed/huge", Content: make([]byte, 5000)})
		wantStatus(t, st, err, mdclient.NotifyPublishFailed, mdclient.ErrMessageTooLarge)

		// The connection survived all of that.
		st, err = c.Publish(ctx, mdclient.Message{Subject: "allowed/after", Content: []byte("still here")})
		wantStatus(t, st, err, mdclient.NotifyPublishOK, nil)
		if got := sub.Next(t); got.Topic != "allowed/after" {
			t.Fatalf("mosquitto_sub got %q, want allowed/after", got.Topic)
		}
		if st := c.Stats(); st.Reconnects != 0 {
			t.Errorf("%d reconnects: the connection did not survive", st.Reconnects)
		}

		wrong := newClient(t, "wrong-token", []string{addr}, mdclient.WithUsername("pub"))
		st, err = wrong.Publish(ctx, mdclient.Message{Subject: "allowed/news", Content: []byte("x")})
		wantStatus(t, st, err, mdclient.NotifyPublishDenied, mdclient.ErrDenied)
	})
}

// TestMosquittoStopped: a server that stops answering (SIGSTOP) after the message was
// written gives TIMEOUT; one stopped before the client connected gives FAILED.
func TestMosquittoStopped(t *testing.T) {
	b := startMosquitto(t)
	transports(t, b.WSAddr(), b.TCPAddr(), func(t *testing.T, addr string) {
		c := newClient(t, allowToken, []string{addr}, mdclient.WithUsername("pub"))
		st, err := c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "lonely/x"})
		wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)

		b.Stop()
		defer b.Continue()
		st, err = c.Publish(ctxTimeout(t, 300*time.Millisecond), mdclient.Message{Subject: "lonely/x"})
		wantStatus(t, st, err, mdclient.NotifyPublishTimeout, mdclient.ErrTimeout)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%v does not wrap context.DeadlineExceeded", err)
		}
		b.Continue()
		// Once the broker runs again the connection carries on.
		st, err = c.Publish(ctxTimeout(t, 10*time.Second), mdclient.Message{Subject: "lonely/x"})
		wantStatus(t, st, err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)
	})
}

// TestTopicAliases: mosquitto allows 10 topic aliases; with 15 subjects published in
// rounds, the first 10 go by alias after their first use, the rest in full, and every
// message arrives under its own subject.
func TestTopicAliases(t *testing.T) {
	b := startMosquitto(t)
	sub := b.Subscribe(t, "sub", subPassword, "allowed/#")
	c := newClient(t, allowToken, []string{b.TCPAddr()}, mdclient.WithUsername("pub"))
	ctx := ctxTimeout(t, 10*time.Second)
	const subjects, rounds = 15, 3
	var written []uint64
	for round := range rounds {
		for i := range subjects {
			subject := fmt.Sprintf("allowed/alias/subject-%02d", i)
			st, err := c.Publish(ctx, mdclient.Message{Subject: subject, Content: []byte(subject)})
			wantStatus(t, st, err, mdclient.NotifyPublishOK, nil)
			got := sub.Next(t)
			if got.Topic != subject || string(got.Payload) != subject {
				t.Fatalf("round %d: subscriber got %q %q, want %q", round, got.Topic, got.Payload, subject)
			}
		}
		written = append(written, c.Stats().BytesWritten)
	}
	first, second := written[0], written[1]-written[0]
	// Both rounds carry the alias property for ten subjects, but only the first their
	// 24 topic bytes.
	if saved := first - second; saved != 10*24 {
		t.Errorf("the second round wrote %d bytes less than the first, want %d", saved, 10*24)
	}
	if third := written[2] - written[1]; third != second {
		t.Errorf("the third round wrote %d bytes, the second %d: aliases should be stable", third, second)
	}
}
