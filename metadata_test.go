package mdclient_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/mqttsub"
)

// metadataMessage is a message with every MQTT 5 field of contract §8 set, some of them
// at their edges: a key that repeats, an empty value, a non-ASCII key, an expiry that
// rounds up.
func metadataMessage(subject string) mdclient.Message {
	return mdclient.Message{
		Subject: subject,
		Content: []byte(`{"order": 17, "note": "ü"}`),
		UserProperties: []mdclient.UserProperty{
			{Key: "traceparent", Value: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
			{Key: "empty", Value: ""},
			{Key: "traceparent", Value: "a second value for the same key"},
			{Key: "schlüssel", Value: "wert with spaces, colons: and = signs"},
		},
		ContentType: "application/json; charset=utf-8",
		Expiry:      89*time.Second + time.Millisecond, // rounded up: 90 s
		UTF8:        true,
	}
}

// checkMetadata compares what an independent subscriber received with m.
func checkMetadata(t *testing.T, got mqttsub.Msg, m mdclient.Message) {
	t.Helper()
	var props []mdclient.UserProperty
	for _, p := range got.UserProperties {
		props = append(props, mdclient.UserProperty{Key: p.Key, Value: p.Value})
	}
	if !slices.Equal(props, m.UserProperties) {
		t.Errorf("user properties %q, want %q", props, m.UserProperties)
	}
	if got.ContentType != m.ContentType || got.PayloadFormat != 1 || string(got.Payload) != string(m.Content) {
		t.Errorf("content type %q, payload format %d, payload %q", got.ContentType, got.PayloadFormat, got.Payload)
	}
	// A broker forwards the time left: at most 90 s, at least a little less.
	if got.MessageExpiry > 90 || got.MessageExpiry < 85 {
		t.Errorf("message expiry %d s, want 90 s rounded up from 89.001 s (less what the broker spent)", got.MessageExpiry)
	}
}

// TestMetadataReachesAnIndependentSubscriber: user properties (in order, keys repeating),
// content type, expiry and the payload format indicator arrive unchanged at a subscriber
// decoding with another MQTT implementation, over TCP and WebSocket, through the embedded
// broker and mosquitto; a repeated subject with properties stays within the server's
// topic alias and packet size limits.
func TestMetadataReachesAnIndependentSubscriber(t *testing.T) {
	t.Run("embedded", func(t *testing.T) {
		srv := embedded(t)
		sub, err := mqttsub.Dial(hostPort(srv.TCPAddr()), "meta-sub", "", "", "allowed/#")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		testMetadata(t, sub, srv.TCPAddr(), srv.WSAddr())
	})
	t.Run("mosquitto", func(t *testing.T) {
		b := startMosquitto(t) // Topic Alias Maximum 10, Maximum Packet Size 4000
		sub, err := mqttsub.Dial(b.TCPHostPort(), "meta-sub", "sub", subPassword, "allowed/#")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		testMetadata(t, sub, b.TCPAddr(), b.WSAddr(), mdclient.WithUsername("pub"))
	})
}

func testMetadata(t *testing.T, sub *mqttsub.Sub, tcp, ws string, opts ...mdclient.Option) {
	t.Helper()
	transports(t, ws, tcp, func(t *testing.T, addr string) {
		subject := "allowed/meta/tcp"
		if strings.HasPrefix(addr, "ws://") {
			subject = "allowed/meta/ws"
		}
		c := newClient(t, allowToken, []string{addr}, opts...)
		ctx := ctxTimeout(t, 10*time.Second)
		before := sub.Len()
		const n = 5 // the same subject again and again: topic aliases where the server has them
		for range n {
			m := metadataMessage(subject)
			if st, err := c.Publish(ctx, m); st != mdclient.NotifyPublishOK {
				t.Fatalf("%s %v", st, err)
			}
		}
		if !sub.Wait(10*time.Second, func(msgs []mqttsub.Msg) bool { return len(msgs) >= before+n }) {
			t.Fatalf("the subscriber received %d of %d", sub.Len()-before, n)
		}
		for _, got := range sub.Messages()[before:] {
			if got.Topic != subject {
				t.Errorf("topic %q, want %q", got.Topic, subject)
			}
			checkMetadata(t, got, metadataMessage(subject))
		}
	})
}

// TestMetadataRefusedBeforeSending: metadata a server could not take is refused before
// anything is written — FAILED wrapping ErrInvalidMessage, or ErrMessageTooLarge once the
// properties push the packet past the server's Maximum Packet Size — and the stream
// around it is not disturbed (mosquitto drops the connection over control characters in
// a user property or a content type).
func TestMetadataRefusedBeforeSending(t *testing.T) {
	b := startMosquitto(t) // Maximum Packet Size 4000
	c := newClient(t, allowToken, []string{b.TCPAddr()}, mdclient.WithUsername("pub"))
	ctx := ctxTimeout(t, 10*time.Second)
	prop := func(k, v string) []mdclient.UserProperty {
		return []mdclient.UserProperty{{Key: "ok", Value: "ok"}, {Key: k, Value: v}}
	}
	bad := map[string]mdclient.Message{
		"NUL in a key":                            {UserProperties: prop("a\x00b", "v")},
		"invalid UTF-8 value":                     {UserProperties: prop("k", "\xff\xfe")},
		"TAB in a value":                          {UserProperties: prop("k", "a\tb")},
		"U+0085 in a key":                         {UserProperties: prop("\u0085", "v")},
		"U+FFFF in a value":                       {UserProperties: prop("k", "\uffff")},
		"a value over 65535":                      {UserProperties: prop("k", strings.Repeat("v", 65536))},
		"NUL in the content type":                 {ContentType: "text/plain\x00"},
		"a control character in the content type": {ContentType: "text/\x01plain"},
		"negative expiry":                         {Expiry: -time.Second},
		"expiry over 2^32-1 s":                    {Expiry: (1 << 32) * time.Second},
		"UTF8 with binary content":                {UTF8: true, Content: []byte{0xff, 0x00, 0xc3}},
	}
	for name, m := range bad {
		m.Subject = "allowed/bad"
		st, err := c.Publish(ctx, m)
		if st != mdclient.NotifyPublishFailed || !errors.Is(err, mdclient.ErrInvalidMessage) || len(err.Error()) > 400 {
			t.Errorf("%s: %s %.400v, want FAILED wrapping ErrInvalidMessage", name, st, err)
		}
		if st, err := c.Publish(ctx, metadataMessage("allowed/good")); st != mdclient.NotifyPublishNoSubscriber {
			t.Fatalf("a good message after %s: %s %v", name, st, err)
		}
	}
	// The largest expiry MQTT can carry is fine.
	if st, err := c.Publish(ctx, mdclient.Message{Subject: "allowed/good", Expiry: (1<<32 - 1) * time.Second}); st != mdclient.NotifyPublishNoSubscriber {
		t.Errorf("expiry 2^32-1 s: %s %v", st, err)
	}
	// Properties count toward the Maximum Packet Size: 900 bytes of content (under
	// mosquitto's message_size_limit of 1000) with 3000 bytes of user properties fit in
	// 4000, not with 3200.
	m := mdclient.Message{Subject: "allowed/size", Content: make([]byte, 900),
		UserProperties: []mdclient.UserProperty{{Key: "k", Value: strings.Repeat("v", 3000)}}}
	if st, err := c.Publish(ctx, m); st != mdclient.NotifyPublishNoSubscriber {
		t.Fatalf("900 bytes with 3000 of properties: %s %v", st, err)
	}
	m.UserProperties = []mdclient.UserProperty{{Key: "k", Value: strings.Repeat("v", 3200)}}
	if st, err := c.Publish(ctx, m); st != mdclient.NotifyPublishFailed || !errors.Is(err, mdclient.ErrMessageTooLarge) {
		t.Errorf("900 bytes with 3200 of properties: %s %v, want FAILED wrapping ErrMessageTooLarge", st, err)
	}
	if st := c.Stats(); st.Reconnects != 0 || st.Resent != 0 {
		t.Errorf("stats %+v: the stream was disturbed", st)
	}
}
