package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The raw writer: the least any MQTT 5 QoS 1 publisher has to do. A writer goroutine
// encodes every PUBLISH it may send (window and pacing permitting) into one buffer and
// writes it at once (one WebSocket message per batch); the reader counts PUBACKs. It is
// the ceiling the clients are measured against.

// rawBatchBytes is the most the raw writer writes at once (-raw-batch).
var rawBatchBytes = 64 << 10

// rawWSMessage, when above 0, is the most bytes the raw writer puts in one WebSocket
// message (-raw-ws-message): a batch is split over several, MQTT packets across them.
var rawWSMessage = 0

// splitWriter writes each Write as WebSocket messages of at most max bytes.
type splitWriter struct {
	net.Conn
	max int
}

func (w splitWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), w.max)
		m, err := w.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// dialRaw opens a byte stream to the broker: TCP, or WebSocket with one binary message
// per Write.
func dialRaw(ctx context.Context, s spec) (net.Conn, error) {
	if s.transport == "tcp" {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", s.tcpAddr)
	}
	c, _, err := websocket.Dial(ctx, s.wsURL, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	if err != nil {
		return nil, err
	}
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	if rawWSMessage > 0 {
		return splitWriter{nc, rawWSMessage}, nil
	}
	return nc, nil
}

func appendVarInt(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// readPacket reads one MQTT packet; body aliases buf when it fits, else is new.
func readPacket(r *bufio.Reader, buf []byte) (typ byte, body []byte, err error) {
	typ, err = r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, shift := 0, 0
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n |= int(b&0x7f) << shift
		if b&0x80 == 0 {
			break
		}
		if shift += 7; shift > 21 {
			return 0, nil, errors.New("malformed remaining length")
		}
	}
	if n > len(buf) {
		buf = make([]byte, n)
	}
	_, err = io.ReadFull(r, buf[:n])
	return typ, buf[:n], err
}

// rawConnect sends an MQTT 5 CONNECT (clean start) and returns the server's Receive
// Maximum from the CONNACK.
func rawConnect(c net.Conn, r *bufio.Reader, clientID string) (int, error) {
	var v []byte
	v = appendString(v, "MQTT")
	v = append(v, 5, 0x02, 0, 60, 0) // version 5, clean start, keep-alive 60 s, no properties
	v = appendString(v, clientID)
	pkt := appendVarInt([]byte{0x10}, len(v))
	if _, err := c.Write(append(pkt, v...)); err != nil {
		return 0, err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	typ, body, err := readPacket(r, make([]byte, 256))
	if err != nil {
		return 0, err
	}
	if typ != 0x20 || len(body) < 3 {
		return 0, fmt.Errorf("expected CONNACK, got packet type %#x", typ)
	}
	if body[1] != 0 {
		return 0, fmt.Errorf("CONNACK reason code %#x", body[1])
	}
	recvMax := 65535
	props, err := properties(body[2:])
	if err != nil {
		return 0, err
	}
	if v, ok := props[0x21]; ok {
		recvMax = int(binary.BigEndian.Uint16(v))
	}
	return recvMax, nil
}

// properties decodes an MQTT 5 property list (length first) into id → value bytes.
func properties(b []byte) (map[byte][]byte, error) {
	n, i, shift := 0, 0, 0
	for {
		if i >= len(b) {
			return nil, errors.New("short properties")
		}
		n |= int(b[i]&0x7f) << shift
		shift += 7
		if i++; b[i-1]&0x80 == 0 {
			break
		}
	}
	if i+n > len(b) {
		return nil, errors.New("short properties")
	}
	b = b[i : i+n]
	m := map[byte][]byte{}
	for len(b) > 0 {
		id := b[0]
		b = b[1:]
		var size int
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2a: // byte
			size = 1
		case 0x13, 0x21, 0x22, 0x23: // two-byte integer
			size = 2
		case 0x02, 0x11, 0x18, 0x27: // four-byte integer
			size = 4
		case 0x0b: // variable byte integer
			size = 1
			for size <= len(b) && b[size-1]&0x80 != 0 {
				size++
			}
		case 0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1a, 0x1c, 0x1f: // string or binary
			if len(b) < 2 {
				return nil, errors.New("short property")
			}
			size = 2 + int(binary.BigEndian.Uint16(b))
		case 0x26: // user property: two strings
			if len(b) < 2 {
				return nil, errors.New("short property")
			}
			k := 2 + int(binary.BigEndian.Uint16(b))
			if len(b) < k+2 {
				return nil, errors.New("short property")
			}
			size = k + 2 + int(binary.BigEndian.Uint16(b[k:]))
		default:
			return nil, fmt.Errorf("unknown property %#x", id)
		}
		if size > len(b) {
			return nil, errors.New("short property")
		}
		m[id] = b[:size]
		b = b[size:]
	}
	return m, nil
}

// runRaw publishes s.n QoS 1 messages keeping at most s.window (and the server's Receive
// Maximum) in flight.
func runRaw(ctx context.Context, s spec) (outcome, error) {
	c, err := dialRaw(ctx, s)
	if err != nil {
		return outcome{}, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	r := bufio.NewReaderSize(c, 256<<10)
	recvMax, err := rawConnect(c, r, fmt.Sprintf("raw-%d", nanos()))
	if err != nil {
		return outcome{}, err
	}
	window := min(s.window, recvMax)
	if s.connected != nil { // the pool's raw: every connection starts together
		s.connected()
		select {
		case <-s.gate:
		case <-ctx.Done():
			return outcome{}, ctx.Err()
		}
	}

	// One PUBLISH, reused: the packet identifier is patched in at idAt.
	var vh []byte
	vh = appendString(vh, s.topic)
	idAt := len(vh)
	vh = append(vh, 0, 0, 0)                          // packet identifier, no properties
	pkt := appendVarInt([]byte{0x32}, len(vh)+s.size) // PUBLISH, QoS 1
	idAt += len(pkt)
	pkt = append(append(pkt, vh...), make([]byte, s.size)...)
	batchMax := max(1, rawBatchBytes/len(pkt))
	// With several topics each PUBLISH is encoded in full, as any publisher must.
	multi := len(s.topics) > 1
	payload := make([]byte, s.size)

	// sentAt[id] holds the send time (+1, so 0 means free) of the message in flight
	// under packet identifier id: the writer sets it, the reader clears it.
	sentAt := make([]atomic.Int64, 65536)
	var acked atomic.Int64
	wake := make(chan struct{}, 1) // reader → writer: acknowledgements arrived
	lat := make([]int64, s.n)
	failed := 0
	readErr := make(chan error, 1)
	cpu0 := selfCPU()
	start := nanos()
	var end int64

	go func() { // the reader
		var err error
		defer func() {
			if err != nil {
				c.Close() // so that a blocked Write ends too
			}
			readErr <- err
		}()
		buf := make([]byte, 4096)
		count := 0
		var now int64
		for count < s.n {
			if r.Buffered() == 0 {
				acked.Store(int64(count))
				select {
				case wake <- struct{}{}:
				default:
				}
				if _, err = r.Peek(1); err != nil {
					return
				}
				now = nanos()
			}
			var typ byte
			var body []byte
			typ, body, err = readPacket(r, buf)
			if err != nil {
				return
			}
			if typ>>4 != 4 || len(body) < 2 {
				continue // not a PUBACK
			}
			id := binary.BigEndian.Uint16(body)
			t := sentAt[id].Swap(0)
			if t == 0 {
				err = fmt.Errorf("PUBACK for packet identifier %d not in flight", id)
				return
			}
			if len(body) > 2 && body[2] >= 0x80 {
				failed++
			}
			lat[count] = now - (t - 1)
			count++
		}
		end = now
	}()

	buf := make([]byte, 0, batchMax*len(pkt))
	sent, id := 0, uint16(0)
	paceStart := nanos()
	for sent < s.n {
		room := window - (sent - int(acked.Load()))
		if s.rate > 0 {
			due := min(s.n, int(float64(nanos()-paceStart)*s.rate/1e9)+1)
			if due == sent {
				next := paceStart + int64(float64(sent)*1e9/s.rate)
				time.Sleep(time.Duration(next - nanos()))
				continue
			}
			room = min(room, due-sent)
		}
		if room <= 0 {
			select {
			case <-wake:
			case err := <-readErr:
				if err == nil {
					err = errors.New("reader ended early")
				}
				return outcome{}, err
			}
			continue
		}
		k := min(room, s.n-sent, batchMax)
		buf = buf[:0]
		now := nanos() + 1
		j := 0
		for ; j < k; j++ {
			next := id%65535 + 1
			if sentAt[next].Load() != 0 {
				break // identifier still in flight: wait for its PUBACK
			}
			id = next
			sentAt[id].Store(now)
			if multi {
				buf = appendPublish(buf, s.topics[(sent+j)%len(s.topics)], id, payload)
				continue
			}
			buf = append(buf, pkt...)
			binary.BigEndian.PutUint16(buf[len(buf)-len(pkt)+idAt:], id)
		}
		if j == 0 {
			select {
			case <-wake:
			case <-time.After(time.Millisecond):
			}
			continue
		}
		if _, err := c.Write(buf); err != nil {
			if rerr := <-readErr; rerr != nil {
				return outcome{}, rerr
			}
			return outcome{}, err
		}
		sent += j
	}
	if err := <-readErr; err != nil {
		return outcome{}, err
	}
	cpu := selfCPU() - cpu0
	c.Write([]byte{0xe0, 0}) // DISCONNECT
	// lat is in the order of the acknowledgements: the last one's wait tells a server that
	// holds back the end of a burst (mosquitto: Nagle over TCP, its WebSocket poll timeout).
	return outcome{lat: lat, failed: failed, elapsed: time.Duration(end - start), cpu: cpu,
		start: start, end: end, detail: fmt.Sprintf("window %d, last PUBACK %s after its PUBLISH", window, fmtLat(float64(lat[s.n-1])/1e3))}, nil
}

// appendPublish appends a QoS 1 PUBLISH of payload to topic with packet identifier id
// and no properties.
func appendPublish(b []byte, topic string, id uint16, payload []byte) []byte {
	b = append(b, 0x32)
	b = appendVarInt(b, 2+len(topic)+2+1+len(payload))
	b = appendString(b, topic)
	b = binary.BigEndian.AppendUint16(b, id)
	b = append(b, 0) // property length
	return append(b, payload...)
}

// runRawPool runs s.conns raw writers at once, writer k to server k (s.tcpAddrs), the
// messages shared out among them; they start publishing together, once all are
// connected. Throughput is every message over the time from that start to the last
// acknowledgement of any of them.
func runRawPool(ctx context.Context, s spec) (outcome, error) {
	k := max(1, s.conns)
	if k == 1 {
		return runRaw(ctx, s)
	}
	if len(s.tcpAddrs) < k {
		return outcome{}, fmt.Errorf("raw: %d connections, %d servers", k, len(s.tcpAddrs))
	}
	var ready sync.WaitGroup
	ready.Add(k)
	gate := make(chan struct{})
	type res struct {
		o   outcome
		err error
	}
	out := make(chan res, k)
	for w := range k {
		ws := s
		ws.tcpAddr, ws.n = s.tcpAddrs[w], s.n/k
		if w < s.n%k {
			ws.n++
		}
		ws.connected, ws.gate = ready.Done, gate
		go func() {
			o, err := runRaw(ctx, ws)
			out <- res{o, err}
		}()
	}
	connected := make(chan struct{})
	go func() { ready.Wait(); close(connected) }()
	select {
	case <-connected:
	case r := <-out: // one failed before connecting
		close(gate)
		return outcome{}, r.err
	}
	cpu0 := selfCPU()
	start := nanos()
	close(gate)
	var all outcome
	var end int64
	var firstErr error
	for range k {
		r := <-out
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
		all.lat = append(all.lat, r.o.lat...)
		all.failed += r.o.failed
		end = max(end, r.o.end)
	}
	if firstErr != nil {
		return outcome{}, firstErr
	}
	all.cpu = selfCPU() - cpu0
	all.elapsed = time.Duration(end - start)
	all.detail = fmt.Sprintf("%d connections, one per server", k)
	return all, nil
}
