//go:build unix

package mosquittotest

// Minimal MQTT 5 and WebSocket client code, only what the tests need to
// check the listeners and CONNACK properties independently of mosquitto's
// own clients.

import (
	"bufio"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func appendVarint(b []byte, n int) []byte {
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// connectPacket encodes an MQTT 5 CONNECT with clean start and an empty
// client identifier (the broker assigns one).
func connectPacket(user, pass string) []byte {
	var vh []byte
	vh = appendString(vh, "MQTT")
	vh = append(vh, 5) // protocol level
	flags := byte(0x02)
	if user != "" {
		flags |= 0x80 | 0x40
	}
	vh = append(vh, flags)
	vh = binary.BigEndian.AppendUint16(vh, 30) // keep alive
	vh = appendVarint(vh, 0)                   // no properties
	vh = appendString(vh, "")                  // client id
	if user != "" {
		vh = appendString(vh, user)
		vh = appendString(vh, pass)
	}
	pkt := []byte{0x10}
	pkt = appendVarint(pkt, len(vh))
	return append(pkt, vh...)
}

func readVarint(r io.ByteReader) (int, error) {
	n, mul := 0, 1
	for i := 0; i < 4; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		n += int(c&0x7f) * mul
		if c&0x80 == 0 {
			return n, nil
		}
		mul *= 128
	}
	return 0, errors.New("malformed variable byte integer")
}

// readPacket reads one MQTT control packet and returns its first byte and
// body.
func readPacket(r *bufio.Reader) (byte, []byte, error) {
	h, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, err := readVarint(r)
	if err != nil {
		return 0, nil, err
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return h, body, err
}

// connack is a decoded MQTT 5 CONNACK.
type connack struct {
	reason     byte
	recvMax    int // 65535 when absent
	aliasMax   int // 0 when absent
	assignedID string
}

func parseConnack(h byte, body []byte) (connack, error) {
	if h != 0x20 || len(body) < 3 {
		return connack{}, fmt.Errorf("not a CONNACK: header 0x%02x, %d bytes", h, len(body))
	}
	ca := connack{reason: body[1], recvMax: 65535}
	r := bufio.NewReader(strings.NewReader(string(body[2:])))
	plen, err := readVarint(r)
	if err != nil {
		return ca, err
	}
	props := make([]byte, plen)
	if _, err := io.ReadFull(r, props); err != nil {
		return ca, err
	}
	for len(props) > 0 {
		id := props[0]
		props = props[1:]
		need := func(n int) ([]byte, error) {
			if len(props) < n {
				return nil, fmt.Errorf("property 0x%02x truncated", id)
			}
			v := props[:n]
			props = props[n:]
			return v, nil
		}
		lenPrefixed := func() ([]byte, error) {
			l, err := need(2)
			if err != nil {
				return nil, err
			}
			return need(int(binary.BigEndian.Uint16(l)))
		}
		var err error
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2a:
			_, err = need(1)
		case 0x13, 0x23:
			_, err = need(2)
		case 0x21, 0x22:
			var v []byte
			if v, err = need(2); err == nil {
				if id == 0x21 {
					ca.recvMax = int(binary.BigEndian.Uint16(v))
				} else {
					ca.aliasMax = int(binary.BigEndian.Uint16(v))
				}
			}
		case 0x02, 0x11, 0x18, 0x27:
			_, err = need(4)
		case 0x12:
			var v []byte
			if v, err = lenPrefixed(); err == nil {
				ca.assignedID = string(v)
			}
		case 0x03, 0x08, 0x09, 0x15, 0x16, 0x1a, 0x1c, 0x1f:
			_, err = lenPrefixed()
		case 0x26:
			if _, err = lenPrefixed(); err == nil {
				_, err = lenPrefixed()
			}
		default:
			err = fmt.Errorf("unknown CONNACK property 0x%02x", id)
		}
		if err != nil {
			return ca, err
		}
	}
	return ca, nil
}

// mqttConnect sends CONNECT over rw and returns the CONNACK.
func mqttConnect(t *testing.T, rw io.ReadWriter, user, pass string) connack {
	t.Helper()
	if _, err := rw.Write(connectPacket(user, pass)); err != nil {
		t.Fatalf("writing CONNECT: %v", err)
	}
	h, body, err := readPacket(bufio.NewReader(rw))
	if err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	ca, err := parseConnack(h, body)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func dial(t *testing.T, hostport string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", hostport, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", hostport, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	return c
}

// wsConn is a client WebSocket connection carrying binary messages; Read
// returns the concatenated payloads of the server's data frames.
type wsConn struct {
	c       net.Conn
	br      *bufio.Reader
	pending []byte
}

// dialWS performs the opening handshake against rawURL ("ws://host:port/path")
// offering subprotocol "mqtt" and checks the server's answer.
func dialWS(t *testing.T, rawURL string) *wsConn {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, u.Host)
	keyBytes := make([]byte, 16)
	if _, err := rand.Read(keyBytes); err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString(keyBytes)
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
		u.RequestURI(), u.Host, key)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodGet})
	if err != nil {
		t.Fatalf("WebSocket handshake with %s: %v", rawURL, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("WebSocket handshake with %s: status %s", rawURL, resp.Status)
	}
	sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), base64.StdEncoding.EncodeToString(sum[:]); got != want {
		t.Fatalf("Sec-WebSocket-Accept = %q, want %q", got, want)
	}
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "mqtt" {
		t.Fatalf("Sec-WebSocket-Protocol = %q, want mqtt", got)
	}
	return &wsConn{c: c, br: br}
}

// Write sends p as one masked binary frame.
func (w *wsConn) Write(p []byte) (int, error) {
	frame := []byte{0x82}
	switch {
	case len(p) < 126:
		frame = append(frame, 0x80|byte(len(p)))
	case len(p) <= 0xffff:
		frame = append(frame, 0x80|126)
		frame = binary.BigEndian.AppendUint16(frame, uint16(len(p)))
	default:
		frame = append(frame, 0x80|127)
		frame = binary.BigEndian.AppendUint64(frame, uint64(len(p)))
	}
	var mask [4]byte
	if _, err := rand.Read(mask[:]); err != nil {
		return 0, err
	}
	frame = append(frame, mask[:]...)
	for i, c := range p {
		frame = append(frame, c^mask[i%4])
	}
	if _, err := w.c.Write(frame); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Read returns payload bytes of binary (or continuation) frames.
func (w *wsConn) Read(p []byte) (int, error) {
	for len(w.pending) == 0 {
		var hdr [2]byte
		if _, err := io.ReadFull(w.br, hdr[:]); err != nil {
			return 0, err
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(w.br, ext[:]); err != nil {
				return 0, err
			}
			n = uint64(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(w.br, ext[:]); err != nil {
				return 0, err
			}
			n = binary.BigEndian.Uint64(ext[:])
		}
		if hdr[1]&0x80 != 0 {
			return 0, errors.New("server sent a masked frame")
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(w.br, payload); err != nil {
			return 0, err
		}
		switch op := hdr[0] & 0x0f; op {
		case 0x0, 0x2:
			w.pending = payload
		case 0x8:
			return 0, io.EOF
		default:
			return 0, fmt.Errorf("unexpected WebSocket opcode %d", op)
		}
	}
	n := copy(p, w.pending)
	w.pending = w.pending[n:]
	return n, nil
}
