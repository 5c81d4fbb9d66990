package mdtest

import (
	"errors"
	"net"
	"sync"

	"github.com/mdclient/mdclient/codec"
)

// Sink is a FAKE MQTT 5 server, for benchmarks: it answers CONNECT with CONNACK (Receive
// Maximum 65535) and every QoS 1 PUBLISH with PUBACK 0x00 at once, and does nothing else —
// no routing, no subscribers, no credentials, no checks beyond framing. It allocates
// nothing per message, so that a benchmark of a publishing pipeline measures the pipeline,
// not a broker. It is not a broker: test behaviour against a [Server] or a real one.
type Sink struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// NewSink starts a Sink on 127.0.0.1 at a free port. The caller must call Close.
func NewSink() (*Sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// TCPAddr is the server entry for SetServers: tcp://127.0.0.1:PORT.
func (s *Sink) TCPAddr() string { return "tcp://" + s.ln.Addr().String() }

// Close stops the listener and every connection, and waits for their goroutines.
// Calling it again returns an error and does nothing.
func (s *Sink) Close() error {
	err := s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Sink) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

var errProtocol = errors.New("mdtest: sink: unexpected packet")

// serve reads what arrived, answers all of it in one write, and repeats.
func serve(c net.Conn) error {
	in := make([]byte, 0, 256<<10)
	out := make([]byte, 0, 64<<10)
	for {
		n, err := c.Read(in[len(in):cap(in)])
		if err != nil {
			return err
		}
		in = in[:len(in)+n]
		off := 0
		out = out[:0]
		for {
			h, body, m, err := codec.Split(in[off:], 0)
			if err != nil {
				return err
			}
			if m == 0 {
				break
			}
			off += m
			switch h.Type {
			case codec.TypeConnect:
				out = codec.AppendConnack(out, &codec.Connack{ReceiveMaximum: 65535, RetainAvailable: true})
			case codec.TypePublish:
				if qos := h.Flags >> 1 & 3; qos == 1 && len(body) >= 2 {
					topicLen := int(body[0])<<8 | int(body[1])
					if len(body) >= 4+topicLen {
						id := uint16(body[2+topicLen])<<8 | uint16(body[3+topicLen])
						out = codec.AppendPuback(out, &codec.Puback{PacketID: id})
					}
				}
			case codec.TypePingreq:
				out = codec.AppendPingresp(out)
			case codec.TypeDisconnect:
				return nil
			default:
				return errProtocol
			}
		}
		in = in[:copy(in, in[off:])]
		if len(in) == cap(in) {
			in = append(in, 0)[:len(in)] // a packet larger than the buffer: grow
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return err
			}
		}
	}
}
