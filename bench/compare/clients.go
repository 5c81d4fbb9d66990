package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/mdclient/mdclient"
)

// ---- mdclient ----

func mdConnect(ctx context.Context, s spec) (*mdclient.Client, error) {
	servers := []string{"tcp://" + s.tcpAddr}
	if s.transport == "ws" {
		servers = []string{s.wsURL}
	} else if len(s.tcpAddrs) > 1 {
		servers = servers[:0]
		for _, a := range s.tcpAddrs {
			servers = append(servers, "tcp://"+a)
		}
	}
	conns := max(1, s.conns)
	c := mdclient.NewClient(mdclient.WithMaxInflight(s.window), mdclient.WithConnections(conns),
		mdclient.WithClientID(fmt.Sprintf("md-%d", nanos())))
	if err := c.SetServers(servers); err != nil {
		c.Close()
		return nil, err
	}
	// One publish before the clock starts, so the connection is up; with several, until
	// every one is.
	if _, err := c.Publish(ctx, mdclient.Message{Subject: s.topic}); ok(err) != nil {
		c.Close()
		return nil, fmt.Errorf("mdclient warm-up publish: %w", err)
	}
	for deadline := time.Now().Add(10 * time.Second); len(c.Stats().Servers) < conns; {
		if time.Now().After(deadline) {
			c.Close()
			return nil, fmt.Errorf("mdclient: %d of %d connections up after 10s", len(c.Stats().Servers), conns)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return c, nil
}

// mdDetail names the servers a pooled client is connected to.
func mdDetail(c *mdclient.Client, s spec) string {
	if s.conns <= 1 {
		return ""
	}
	distinct := map[string]bool{}
	for _, sv := range c.Stats().Servers {
		distinct[sv] = true
	}
	return fmt.Sprintf("%d connections to %d distinct servers", s.conns, len(distinct))
}

// ok treats NO_SUBSCRIBER (PUBACK 0x10) as the acknowledgement it is.
func ok(err error) error {
	if errors.Is(err, mdclient.ErrNoSubscriber) {
		return nil
	}
	return err
}

// runMdAsync: one goroutine calls PublishAsync with one shared Result channel, another
// reads the results. Every s.latEvery-th message carries its index as its closure, for
// its latency; the others carry none.
func runMdAsync(ctx context.Context, s spec) (outcome, error) {
	c, err := mdConnect(ctx, s)
	if err != nil {
		return outcome{}, err
	}
	defer c.Close()
	every := max(1, s.latEvery)
	closures := make([]string, s.n)
	for i := 0; i < s.n; i += every {
		closures[i] = strconv.Itoa(i)
	}
	sentAt := make([]int64, s.n)
	lat := make([]int64, 0, s.n/every+1)
	results := make(chan mdclient.PublishResult, 4096)
	payload := make([]byte, s.size)
	publish := func(i int, t int64) {
		if t != 0 {
			sentAt[i] = t
		}
		c.PublishAsync(s.pubCtx, mdclient.PublishRequest{
			Message: mdclient.Message{Subject: s.topicOf(i), Content: payload, Closure: closures[i]},
			Result:  results,
		})
	}
	// The reader receives without a select (which would cost it a lock of each channel
	// per message): should the measurement's context end, this puts a marker into the
	// channel instead.
	const cancelled = "cancelled"
	stop := context.AfterFunc(ctx, func() { results <- mdclient.PublishResult{Closure: cancelled} })
	defer stop()
	bytes0 := c.Stats().BytesWritten
	cpu0 := selfCPU()
	start := nanos()
	go func() { // the producer
		if s.rate <= 0 {
			for i := range s.n {
				var t int64
				if i%every == 0 {
					t = nanos()
				}
				publish(i, t)
			}
			return
		}
		pacer(ctx, s.n, s.rate, func(lo, hi int) {
			t := nanos()
			for i := lo; i < hi; i++ {
				publish(i, t)
			}
		})
	}()
	failed := 0
	for range s.n {
		r := <-results
		if r.Closure != "" {
			if r.Closure == cancelled {
				return outcome{}, ctx.Err()
			}
			now := nanos()
			i, err := strconv.Atoi(r.Closure)
			if err != nil {
				return outcome{}, fmt.Errorf("result with closure %q", r.Closure)
			}
			lat = append(lat, now-sentAt[i])
		}
		if r.Status != mdclient.NotifyPublishOK && r.Status != mdclient.NotifyPublishNoSubscriber {
			failed++
		}
	}
	end := nanos()
	cpu := selfCPU() - cpu0
	return outcome{lat: lat, failed: failed, elapsed: time.Duration(end - start), cpu: cpu,
		bytes: c.Stats().BytesWritten - bytes0, detail: mdDetail(c, s)}, nil
}

// runMdSync: s.goroutines goroutines call Publish.
func runMdSync(ctx context.Context, s spec) (outcome, error) {
	c, err := mdConnect(ctx, s)
	if err != nil {
		return outcome{}, err
	}
	defer c.Close()
	payload := make([]byte, s.size)
	bytes0 := c.Stats().BytesWritten
	o := syncWorkers(ctx, s, func(i int) error {
		_, err := c.Publish(s.pubCtx, mdclient.Message{Subject: s.topicOf(i), Content: payload})
		return ok(err)
	})
	o.bytes, o.detail = c.Stats().BytesWritten-bytes0, mdDetail(c, s)
	return o, nil
}

// ---- paho.golang (MQTT 5) ----

// wsPacketConn carries paho.golang over coder/websocket. paho writes a packet as several
// Writes (header, variable header, payload) while holding the connection's sync.Locker;
// this wrapper collects them and sends one WebSocket message per packet on Unlock.
// Reading goes through websocket.NetConn, which reads across message boundaries.
type wsPacketConn struct {
	net.Conn // websocket.NetConn: Read, Close, addresses, deadlines
	ws       *websocket.Conn
	mu       sync.Mutex // held from Lock to Unlock: one packet's writes
	buf      []byte     // guarded by mu
	err      error      // guarded by mu: the last write error, reported by the next Write
}

func (c *wsPacketConn) Lock() { c.mu.Lock() }

func (c *wsPacketConn) Unlock() {
	if len(c.buf) > 0 {
		if err := c.ws.Write(context.Background(), websocket.MessageBinary, c.buf); err != nil {
			c.err = err
		}
		c.buf = c.buf[:0]
	}
	c.mu.Unlock()
}

// Write is only called by paho between Lock and Unlock.
func (c *wsPacketConn) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

func pahoDial(ctx context.Context, s spec) (net.Conn, error) {
	if s.transport == "tcp" {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", s.tcpAddr)
		if err != nil {
			return nil, err
		}
		return packets.NewThreadSafeConn(nc), nil
	}
	ws, _, err := websocket.Dial(ctx, s.wsURL, &websocket.DialOptions{Subprotocols: []string{"mqtt"}})
	if err != nil {
		return nil, err
	}
	return &wsPacketConn{Conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary), ws: ws}, nil
}

// runPaho: paho.golang v0.23.0's Client.Publish (QoS 1) from s.goroutines goroutines.
func runPaho(ctx context.Context, s spec) (outcome, error) {
	nc, err := pahoDial(ctx, s)
	if err != nil {
		return outcome{}, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc, ClientID: fmt.Sprintf("paho-%d", nanos())})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: c.ClientID(), CleanStart: true, KeepAlive: 60})
	if err != nil {
		nc.Close()
		return outcome{}, fmt.Errorf("paho.golang connect: %w", err)
	}
	detail := ""
	if ca.Properties != nil && ca.Properties.ReceiveMaximum != nil {
		detail = fmt.Sprintf("server receive maximum %d", *ca.Properties.ReceiveMaximum)
	}
	defer func() {
		c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		nc.Close()
	}()
	payload := make([]byte, s.size)
	o := syncWorkers(ctx, s, func(int) error {
		_, err := c.Publish(s.pubCtx, &paho.Publish{QoS: 1, Topic: s.topic, Payload: payload})
		return err // a reason code below 0x80 (0x10 no subscriber) is no error
	})
	o.detail = detail
	return o, nil
}

// ---- paho.mqtt.golang (MQTT 3.1.1) ----

// runPahoMQTT: paho.mqtt.golang v1.5.1, one goroutine publishing asynchronously while at
// most s.tokens tokens are outstanding, another waiting for them in order.
func runPahoMQTT(ctx context.Context, s spec) (outcome, error) {
	broker := "tcp://" + s.tcpAddr
	if s.transport == "ws" {
		broker = s.wsURL
	}
	opts := pahomqtt.NewClientOptions().
		AddBroker(broker).
		SetClientID(fmt.Sprintf("pahomqtt-%d", nanos())).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetKeepAlive(60 * time.Second).
		SetConnectTimeout(10 * time.Second)
	c := pahomqtt.NewClient(opts)
	if t := c.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		return outcome{}, fmt.Errorf("paho.mqtt.golang connect: %v", t.Error())
	}
	defer c.Disconnect(250)

	type pending struct {
		i   int
		t   int64
		tok pahomqtt.Token
	}
	// The consumer holds one token and the channel the rest: s.tokens outstanding.
	window := make(chan pending, max(1, s.tokens-1))
	payload := make([]byte, s.size)
	publish := func(i int, t int64) {
		window <- pending{i, t, c.Publish(s.topic, 1, false, payload)}
	}
	cpu0 := selfCPU()
	start := nanos()
	go func() { // the producer
		defer close(window)
		if s.rate <= 0 {
			every := max(1, s.latEvery)
			for i := range s.n {
				var t int64 // 0: latency not taken
				if i%every == 0 {
					t = nanos()
				}
				publish(i, t)
			}
			return
		}
		pacer(ctx, s.n, s.rate, func(lo, hi int) {
			t := nanos()
			for i := lo; i < hi; i++ {
				publish(i, t)
			}
		})
	}()
	lat := make([]int64, s.n)
	failed, k := 0, 0
	for p := range window {
		select {
		case <-p.tok.Done():
		case <-ctx.Done():
			return outcome{}, ctx.Err()
		}
		// Tokens complete in the order the broker acknowledges, which for one
		// connection to mosquitto is the order they were published.
		if p.t != 0 {
			lat[k] = nanos() - p.t
			k++
		}
		if p.tok.Error() != nil {
			failed++
		}
	}
	end := nanos()
	return outcome{lat: lat[:k], failed: failed, elapsed: time.Duration(end - start), cpu: selfCPU() - cpu0}, nil
}
