// Package fakebroker is a deliberately misbehaving MQTT 5 server, FOR TESTS ONLY.
//
// It is not a broker and must never serve real clients: it routes nothing, checks no
// credentials and keeps no state. It exists to see how a client copes with a server that
// breaks the protocol. For each connection it
//
//  1. reads the client's CONNECT,
//  2. answers with a valid MQTT 5 CONNACK (reason code 0x00, Receive Maximum as
//     configured),
//  3. waits for the client's first PUBLISH if the [Script] says so,
//  4. sends the frame the Script returns — typically malformed: see [Oversized],
//     [LongVarint], [ReservedType], [Subscribe], [Puback] with an identifier that is not
//     in flight, and others —,
//  5. then reads and discards whatever the client sends until the client closes the
//     connection (the outcome the tests expect), the [Script.Linger] time passes or the
//     server is closed.
//
// What happened on each connection is reported as a [Session] on [Server.Sessions].
// The frames are built by hand, independently of the client's own codec, so a bug there
// cannot hide itself.
package fakebroker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// maxIncoming bounds the packets the fake broker accepts from a client.
const maxIncoming = 16 << 20

// MQTT packet types used here.
const (
	typeConnect    = 1
	typeConnack    = 2
	typePublish    = 3
	typePuback     = 4
	typeSubscribe  = 8
	typeDisconnect = 14
)

// When says when the scripted frame is sent.
type When uint8

const (
	// AfterConnack sends the frame right after the CONNACK.
	AfterConnack When = iota
	// AfterPublish waits for the client's first PUBLISH, whose packet identifier the
	// Script's Frame receives, so that the message is in flight when the frame arrives.
	AfterPublish
)

// Script is what the fake broker does on every connection.
type Script struct {
	// Frame returns the bytes to send after the CONNACK. packetID is the identifier of the
	// client's first PUBLISH with When == AfterPublish (0 for QoS 0), else 0. Nil sends
	// nothing: the fake broker then only acknowledges the connection and stays silent.
	Frame func(packetID uint16) []byte
	// When the frame is sent.
	When When
	// ReceiveMaximum is announced in the CONNACK when non-zero.
	ReceiveMaximum uint16
	// Connack, when set, is sent instead of the valid CONNACK (see [RedirectConnack]); a
	// failure reason code in it ends the session after it is sent.
	Connack []byte
	// Linger bounds how long the fake broker waits, after the frame, for the client to
	// close the connection before it closes it itself. Default 30 s.
	Linger time.Duration
}

// Session reports one connection.
type Session struct {
	ClientID string // from the CONNECT; the password is deliberately not kept
	PacketID uint16 // of the PUBLISH that triggered the frame (AfterPublish)
	Sent     bool   // the frame was written
	// ClientClosed: after the frame was sent, the client ended the connection (EOF or
	// reset), rather than the fake broker (Linger, Close).
	ClientClosed bool
	// ClientDisconnect: the client sent DISCONNECT before ending the connection.
	ClientDisconnect bool
	Err              error // why the session ended early, if it did (before the frame was sent)
}

// Server is a running fake broker. Its methods are safe for concurrent use.
type Server struct {
	script   Script
	ln       net.Listener
	sessions chan Session
	done     chan struct{}
	wg       sync.WaitGroup

	mu     sync.Mutex // guards conns and closed
	conns  map[net.Conn]struct{}
	closed bool
}

// Start listens on a free port of 127.0.0.1 and serves every connection by script. The
// caller must call Close.
func Start(script Script) (*Server, error) {
	if script.Linger <= 0 {
		script.Linger = 30 * time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{
		script:   script,
		ln:       ln,
		sessions: make(chan Session, 64),
		done:     make(chan struct{}),
		conns:    make(map[net.Conn]struct{}),
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Addr is the server's address as a client's server list names it: "tcp://127.0.0.1:PORT".
func (s *Server) Addr() string { return "tcp://" + s.HostPort() }

// HostPort is "127.0.0.1:PORT".
func (s *Server) HostPort() string { return s.ln.Addr().String() }

// Sessions delivers a Session when a connection ends. It buffers 64; reports beyond that
// are dropped while nobody reads.
func (s *Server) Sessions() <-chan Session { return s.sessions }

// Close stops accepting, closes every connection and returns once every goroutine of the
// server has ended. Calling it again does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			sess := s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
			select {
			case s.sessions <- sess:
			default:
			}
		}()
	}
}

func (s *Server) serve(c net.Conn) (sess Session) {
	r := bufio.NewReader(c)
	typ, _, body, err := readPacket(r)
	if err != nil {
		sess.Err = fmt.Errorf("reading CONNECT: %w", err)
		return sess
	}
	if typ != typeConnect {
		sess.Err = fmt.Errorf("first packet has type %d, not CONNECT", typ)
		return sess
	}
	sess.ClientID = clientID(body)
	connack := Connack(s.script.ReceiveMaximum)
	if s.script.Connack != nil {
		connack = s.script.Connack
	}
	if _, err := c.Write(connack); err != nil {
		sess.Err = fmt.Errorf("writing CONNACK: %w", err)
		return sess
	}
	if connack[3] >= 0x80 { // refused: the client hangs up
		sess.Sent = true
		return sess
	}
	if s.script.When == AfterPublish {
		for {
			typ, flags, body, err := readPacket(r)
			if err != nil {
				sess.Err = fmt.Errorf("waiting for PUBLISH: %w", err)
				return sess
			}
			if typ == typePublish {
				sess.PacketID = publishID(flags, body)
				break
			}
		}
	}
	if s.script.Frame != nil {
		if _, err := c.Write(s.script.Frame(sess.PacketID)); err != nil {
			sess.Err = fmt.Errorf("writing the scripted frame: %w", err)
			return sess
		}
	}
	sess.Sent = true
	// Wait for the client to hang up; the read ends with an error when it does, when
	// Close closes the socket, or at the deadline.
	c.SetReadDeadline(time.Now().Add(s.script.Linger))
	for {
		typ, _, _, err := readPacket(r)
		if err != nil {
			select {
			case <-s.done:
			default:
				var ne net.Error
				sess.ClientClosed = !(errors.As(err, &ne) && ne.Timeout())
			}
			return sess
		}
		if typ == typeDisconnect {
			sess.ClientDisconnect = true
		}
	}
}

// readPacket reads one MQTT packet: its type, flags and body.
func readPacket(r *bufio.Reader) (typ, flags byte, body []byte, err error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, 0, nil, err
	}
	length, mul := 0, 1
	for i := 0; ; i++ {
		if i == 4 {
			return 0, 0, nil, errors.New("remaining length longer than 4 bytes")
		}
		b, err := r.ReadByte()
		if err != nil {
			return 0, 0, nil, err
		}
		length += int(b&0x7F) * mul
		mul *= 128
		if b&0x80 == 0 {
			break
		}
	}
	if length > maxIncoming {
		return 0, 0, nil, fmt.Errorf("packet of %d bytes", length)
	}
	body = make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, 0, nil, err
	}
	return first >> 4, first & 0x0F, body, nil
}

// clientID extracts the client identifier from a CONNECT body, or "" if it cannot.
func clientID(body []byte) string {
	// Protocol name (2+4 "MQTT"), level, flags, keep alive (2), then properties.
	const fixed = 2 + 4 + 1 + 1 + 2
	if len(body) < fixed {
		return ""
	}
	rest := body[fixed:]
	plen, n := varint(rest)
	if n == 0 || len(rest) < n+plen+2 {
		return ""
	}
	rest = rest[n+plen:]
	idLen := int(binary.BigEndian.Uint16(rest))
	if len(rest) < 2+idLen {
		return ""
	}
	return string(rest[2 : 2+idLen])
}

// publishID extracts the packet identifier of a PUBLISH, 0 for QoS 0 or a short body.
func publishID(flags byte, body []byte) uint16 {
	if (flags>>1)&3 == 0 || len(body) < 2 {
		return 0
	}
	tlen := int(binary.BigEndian.Uint16(body))
	if len(body) < 2+tlen+2 {
		return 0
	}
	return binary.BigEndian.Uint16(body[2+tlen:])
}

func varint(b []byte) (v, n int) {
	mul := 1
	for i := 0; i < 4 && i < len(b); i++ {
		v += int(b[i]&0x7F) * mul
		mul *= 128
		if b[i]&0x80 == 0 {
			return v, i + 1
		}
	}
	return 0, 0
}

// Connack is a valid MQTT 5 CONNACK: no session present, reason code 0x00 and, when
// receiveMaximum is non-zero, a Receive Maximum property.
func Connack(receiveMaximum uint16) []byte {
	if receiveMaximum == 0 {
		return []byte{typeConnack << 4, 3, 0, 0, 0}
	}
	return []byte{typeConnack << 4, 6, 0, 0, 3, 0x21, byte(receiveMaximum >> 8), byte(receiveMaximum)}
}

// RedirectConnack is a CONNACK refusing the connection with reason (0x9C use another
// server, 0x9D server moved) and the Server Reference ref.
func RedirectConnack(reason byte, ref string) []byte {
	props := appendString([]byte{0x1C}, ref)
	body := append([]byte{0, reason}, byte(len(props)))
	return appendPacket(nil, typeConnack<<4, append(body, props...))
}

// Disconnect is a DISCONNECT with reason and, when ref is not "", a Server Reference.
func Disconnect(reason byte, ref string) []byte {
	var props []byte
	if ref != "" {
		props = appendString([]byte{0x1C}, ref)
	}
	body := append([]byte{reason}, byte(len(props)))
	return appendPacket(nil, typeDisconnect<<4, append(body, props...))
}

// appendString appends an MQTT string: a 2-byte length and the bytes.
func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(s)))
	return append(dst, s...)
}

// Puback is a well-formed PUBACK for packetID with reasonCode and no properties.
func Puback(packetID uint16, reasonCode byte) []byte {
	return []byte{typePuback << 4, 3, byte(packetID >> 8), byte(packetID), reasonCode}
}

// Oversized is the fixed header of a PUBACK announcing 268 435 455 bytes (the largest
// remaining length MQTT can encode), above any sane client's limit. No body follows.
func Oversized() []byte {
	return []byte{typePuback << 4, 0xFF, 0xFF, 0xFF, 0x7F}
}

// LongVarint is a PUBACK whose remaining length is a 5-byte variable byte integer, which
// MQTT forbids (at most 4 bytes).
func LongVarint() []byte {
	return []byte{typePuback << 4, 0x80, 0x80, 0x80, 0x80, 0x01}
}

// ReservedType is a packet of type 0, which MQTT reserves (forbidden in both directions).
func ReservedType() []byte {
	return []byte{0x00, 0x00}
}

// Subscribe is a well-formed SUBSCRIBE (packet id 1, filter "a/b", QoS 1), a packet only
// clients may send.
func Subscribe() []byte {
	// packet id (2) + properties length (1) + filter (2+3) + options (1)
	return []byte{typeSubscribe<<4 | 0b0010, 9, 0, 1, 0, 0, 3, 'a', '/', 'b', 1}
}

// Publish is a well-formed QoS 0 PUBLISH of payload to topic, which a client that never
// subscribed must not receive.
func Publish(topic string, payload []byte) []byte {
	body := make([]byte, 0, 2+len(topic)+1+len(payload))
	body = binary.BigEndian.AppendUint16(body, uint16(len(topic)))
	body = append(body, topic...)
	body = append(body, 0) // no properties
	body = append(body, payload...)
	return appendPacket(nil, typePublish<<4, body)
}

// TruncatedPuback is a PUBACK whose remaining length (1) cannot hold a packet identifier.
func TruncatedPuback() []byte {
	return []byte{typePuback << 4, 1, 0}
}

// PubackBadFlags is a PUBACK with fixed-header flags 0b0001, which MQTT requires to be 0.
func PubackBadFlags(packetID uint16) []byte {
	return []byte{typePuback<<4 | 1, 2, byte(packetID >> 8), byte(packetID)}
}

// appendPacket appends a packet with the first byte and body given.
func appendPacket(dst []byte, first byte, body []byte) []byte {
	dst = append(dst, first)
	n := len(body)
	for {
		b := byte(n & 0x7F)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			break
		}
	}
	return append(dst, body...)
}
