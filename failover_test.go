package mdclient_test

// Failover against real mosquitto processes (issue 3): a server killed mid-stream, every
// server killed and one restarted, servers that refuse the entitlement token. See
// docs/reliability.md for what each test proves and how to run it.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdclient/mdclient"
	"github.com/mdclient/mdclient/internal/mosquittotest"
)

// timedEvent is an Event and when the test read it.
type timedEvent struct {
	mdclient.Event
	At time.Time
}

func describeEvents(evs []timedEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "  %s %s %s %v\n", ev.At.Format("15:04:05.000"), ev.Type, ev.Server, ev.Err)
	}
	return b.String()
}

// serverPort returns the port of a server address as the client names it
// ("tcp://127.0.0.1:P" or "ws://127.0.0.1:P/mqtt").
func serverPort(t *testing.T, addr string) int {
	t.Helper()
	u, err := url.Parse(addr)
	if err != nil {
		t.Fatalf("server address %q: %v", addr, err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("server address %q: %v", addr, err)
	}
	return p
}

// unreadBytes returns how many bytes this process has sent to the server listening on
// port that the server has not read yet: the receive queues (Linux /proc/net/tcp*) of the
// server's ends of this process's established connections to port. While mosquitto is
// stopped (SIGSTOP) everything the client writes stays there, so it tells that publishes
// were written and are in flight, without guessing with a sleep.
func unreadBytes(port int) (int, error) {
	ours := map[string]bool{} // socket inodes of this process
	dir := "/proc/self/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if inode, ok := strings.CutPrefix(link, "socket:["); ok {
			ours[strings.TrimSuffix(inode, "]")] = true
		}
	}
	type sock struct {
		local, remote int
		rx            int
		inode         string
	}
	var socks []sock
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		if err != nil {
			if name == "/proc/net/tcp6" {
				continue
			}
			return 0, err
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "01" { // 01: ESTABLISHED
				continue
			}
			port := func(addr string) int {
				_, p, _ := strings.Cut(addr, ":")
				n, _ := strconv.ParseInt(p, 16, 32)
				return int(n)
			}
			_, rxHex, _ := strings.Cut(fs[4], ":")
			rx, _ := strconv.ParseInt(rxHex, 16, 64)
			socks = append(socks, sock{local: port(fs[1]), remote: port(fs[2]), rx: int(rx), inode: fs[9]})
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return 0, err
		}
	}
	clientPorts := map[int]bool{}
	for _, s := range socks {
		if ours[s.inode] && s.remote == port {
			clientPorts[s.local] = true
		}
	}
	total := 0
	for _, s := range socks {
		if s.local == port && clientPorts[s.remote] && !ours[s.inode] {
			total += s.rx
		}
	}
	return total, nil
}

// publishLen is the size of an MQTT 5 QoS 1 PUBLISH without properties. The client may
// send less: a repeated topic goes as a topic alias (an empty topic and 3 bytes of
// property) where the server allows aliases; aliasedLen is that size.
func publishLen(topic string, payload int) int {
	rem := 2 + len(topic) + 2 + 1 + payload
	n := 2
	for r := rem; r >= 128; r /= 128 {
		n++
	}
	return n - 1 + rem
}

// aliasedLen is the size of an MQTT 5 QoS 1 PUBLISH that names its topic by alias.
func aliasedLen(payload int) int { return publishLen("", payload) + 3 }

// TestFailoverKill: three mosquitto nodes, a steady stream of QoSGuaranteed publishes, and
// the node in use is killed (SIGKILL) mid-stream. Every request gets exactly one result,
// every message reported OK reached a subscriber (the ledger checks both), publishing
// resumes on another node within a second, Events reports the change, and the messages
// in flight were resent.
//
// Just before the kill, two things make the outcome depend on the client alone:
//   - the stream pauses for a moment until the node's subscriber has received every
//     message sent so far: mosquitto acknowledges a message before it has written it to a
//     subscriber whose window is full, and a SIGKILL loses what it still holds, which
//     would be mosquitto's loss, not the client's;
//   - the node is frozen (SIGSTOP) and the stream resumes until this process's
//     connection has publishes written to it and unread, so that messages are in flight
//     when it dies whatever the scheduling; a node killed between two acknowledgements
//     would leave nothing to resend.
func TestFailoverKill(t *testing.T) {
	const (
		n         = 30000
		rate      = 6000 // publishes per second: well within what one mosquitto_sub can print
		killAfter = 6000 // OK results before the kill
		topic     = "failover/stream"
		prefix    = "fo-"
	)
	nodes := []*mosquittotest.Broker{mosquittoNode(t, allowToken), mosquittoNode(t, allowToken), mosquittoNode(t, allowToken)}
	servers := []string{nodes[0].WSAddr(), nodes[1].TCPAddr(), nodes[2].WSAddr()}
	index := map[string]int{}
	led := newLedger("failover-kill", "failover/")
	subName := func(i int) string { return "sub-" + strconv.Itoa(i) }
	for i, s := range servers {
		index[s] = i
		// The nodes are not bridged: a message reaches the subscriber of the node that
		// acknowledged it, or none.
		led.server(s, strconv.Itoa(i))
		led.subscriber(subName(i), strconv.Itoa(i))
		led.watchMosquitto(t, subName(i), nodes[i], "failover/#")
	}

	c := newClient(t, allowToken, servers, mdclient.WithUsername("pub"))
	ctx := ctxTimeout(t, 90*time.Second)
	results := make(chan mdclient.PublishResult, 4096)
	stream := startStream(t, c, ctx, led, topic, prefix, rate, n, 0, results)

	const (
		streaming = iota
		catchingUp
		stopped
		killed
	)
	var (
		phase        = streaming
		status       = map[mdclient.Status]int{}
		okFrom       = map[string]int{}
		okCount      int
		received     int
		events       []timedEvent
		victim       = -1
		resume       func()
		phaseEnd     time.Time
		caughtUp     bool
		pausedAt     time.Time
		stopAt       time.Time
		resentAtStop uint64
		killAt       time.Time
		unread       int
		resumedAt    time.Time
		resumedOn    string
		lastServer   string
		failures     []string
	)
	// At least 50 publishes in flight: the payloads name their request, and none is
	// longer than the last one's.
	inflightMin := 50 * aliasedLen(len(led.payload(prefix+strconv.Itoa(n-1), 0)))
	poll := time.NewTicker(time.Millisecond)
	defer poll.Stop()
	// Generous bounds: on a loaded machine mosquitto_sub falls seconds behind the stream.
	const catchUpWithin = 20 * time.Second
	deadline := time.NewTimer(60 * time.Second)
	defer deadline.Stop()
	for received < n {
		select {
		case r := <-results:
			received++
			led.result("results", results, r)
			if v, bad := led.firstProblem(); bad {
				t.Fatal(v)
			}
			status[r.Status]++
			if r.Status != mdclient.NotifyPublishOK {
				if len(failures) < 10 {
					failures = append(failures, fmt.Sprintf("%s: %s %v (server %q)", r.Closure, r.Status, r.Err, r.Server))
				}
				continue
			}
			if _, ok := index[r.Server]; !ok {
				t.Fatalf("closure %s: OK from unknown server %q", r.Closure, r.Server)
			}
			okFrom[r.Server]++
			okCount++
			lastServer = r.Server
			if phase == killed && resumedAt.IsZero() && r.Server != servers[victim] {
				resumedAt, resumedOn = time.Now(), r.Server
			}
		case ev := <-c.Events():
			events = append(events, timedEvent{ev, time.Now()})
		case <-poll.C:
		case <-deadline.C:
			t.Fatalf("%d of %d results after 60 s (phase %d); statuses %v\nevents:\n%s", received, n, phase, status, describeEvents(events))
		}

		switch phase {
		case streaming:
			if okCount >= killAfter {
				var ok bool
				if resume, ok = stream.Pause(); !ok {
					t.Fatal("the stream ended before the kill")
				}
				victim, pausedAt = index[lastServer], time.Now()
				phase, phaseEnd = catchingUp, pausedAt.Add(catchUpWithin)
			}
		case catchingUp:
			// Everything sent so far went to the victim, the only node used yet.
			caughtUp = led.distinct(subName(victim)) >= int(stream.sent.Load())
			if caughtUp || time.Now().After(phaseEnd) {
				if !caughtUp {
					t.Logf("the subscriber of %s has %d of the %d messages sent after %v (OK from it: %d); freezing it anyway",
						servers[victim], led.distinct(subName(victim)), stream.sent.Load(), catchUpWithin, okFrom[servers[victim]])
				}
				nodes[victim].Stop()
				stopAt = time.Now()
				resentAtStop = c.Stats().Resent
				resume()
				phase, phaseEnd = stopped, stopAt.Add(5*time.Second)
			}
		case stopped:
			u, err := unreadBytes(serverPort(t, servers[victim]))
			if err != nil {
				t.Fatalf("reading the socket queues: %v", err)
			}
			unread = u
			if unread >= inflightMin || time.Now().After(phaseEnd) {
				if unread < inflightMin {
					t.Errorf("only %d bytes written to the frozen node %s within 5 s, want ≥ %d", unread, servers[victim], inflightMin)
				}
				killAt = time.Now()
				nodes[victim].Kill()
				phase = killed
			}
		}
	}
	// Events that came with the last results.
	for more := true; more; {
		select {
		case ev := <-c.Events():
			events = append(events, timedEvent{ev, time.Now()})
		default:
			more = false
		}
	}
	if phase != killed {
		t.Fatalf("the stream ended before the kill (phase %d, %d OK)", phase, okCount)
	}
	killedAddr := servers[victim]
	t.Logf("killed %s after %d OK: stream paused %v (subscriber caught up: %v), node frozen %v with %d bytes unread; resumed on %s after %v",
		killedAddr, killAfter, stopAt.Sub(pausedAt).Round(time.Millisecond), caughtUp, killAt.Sub(stopAt).Round(time.Millisecond), unread,
		resumedOn, resumedAt.Sub(killAt).Round(time.Millisecond))
	t.Logf("statuses %v; OK per server %v", status, okFrom)

	// Exactly one result each: a second one failed above, and n came in (check, below,
	// reports any request without one).
	if status[mdclient.NotifyPublishOK] != n {
		t.Errorf("%d of %d OK, statuses %v; first others:\n  %s", status[mdclient.NotifyPublishOK], n, status, strings.Join(failures, "\n  "))
	}

	// Publishing resumed on another node within a second of the kill.
	if resumedAt.IsZero() {
		t.Errorf("no OK from another server after the kill of %s", killedAddr)
	} else if d := resumedAt.Sub(killAt); d > time.Second {
		t.Errorf("first OK from another server (%s) %v after the kill, want ≤ 1 s", resumedOn, d)
	}

	// NOTIFY_SERVER_DOWN for the killed node, then NOTIFY_SERVER_UP for another.
	down := -1
	for i, ev := range events {
		if ev.Type == mdclient.NotifyServerDown && ev.Server == killedAddr && !ev.At.Before(killAt) {
			down = i
			break
		}
	}
	up := -1
	for i := down + 1; down >= 0 && i < len(events); i++ {
		if events[i].Type == mdclient.NotifyServerUp && events[i].Server != killedAddr {
			up = i
			break
		}
	}
	if down < 0 || up < 0 {
		t.Errorf("want NOTIFY_SERVER_DOWN for %s then NOTIFY_SERVER_UP for another; events:\n%s", killedAddr, describeEvents(events))
	} else if events[down].Err == nil {
		t.Errorf("NOTIFY_SERVER_DOWN for %s without a reason", killedAddr)
	}

	// The messages in flight on the killed node were sent again.
	resent := c.Stats().Resent - resentAtStop
	if resent == 0 {
		t.Errorf("no message resent after the kill (Stats.Resent %d when the node was frozen, %d now)", resentAtStop, c.Stats().Resent)
	}

	// Zero acknowledged loss: every message reported OK reached the subscriber of the node
	// that acknowledged it. And no FAILED message reached one, nor a stranger's.
	if miss := led.awaitReceived(40 * time.Second); miss > 0 {
		t.Logf("%d messages reported OK still unreceived after 40 s (subscriber of the killed node caught up before the freeze: %v)", miss, caughtUp)
	}
	failViolations(t, "", led.check())
	if strays := led.counts().Strays; strays > 0 {
		t.Errorf("subscribers received %d messages that are none of ours", strays)
	}
	t.Logf("resent %d; %d messages received twice (resends of messages the killed node had routed)", resent, led.receivedTwice())
	noMore(t, results)
}

// TestAllServersDown: every node of the cluster dies, then one comes back. Requests wait,
// each bounded by its own context: those whose context ends before any node is back get
// NOTIFY_PUBLISH_TIMEOUT if they had been written (to the node that died with them in
// flight) and NOTIFY_PUBLISH_FAILED wrapping ErrTimeout and ErrNoServers if they never
// were; those with time left go out once a node is restarted.
func TestAllServersDown(t *testing.T) {
	const (
		nWritten = 20
		nExpired = 20
		nWaiting = 20
	)
	nodes := []*mosquittotest.Broker{mosquittoNode(t, allowToken), mosquittoNode(t, allowToken)}
	servers := []string{nodes[0].TCPAddr(), nodes[1].WSAddr()}
	// Start on the TCP node alone, so that the bytes waiting in its socket are exactly the
	// publishes written to it (WebSocket framing would blur the count), then give the client
	// the whole cluster: the live connection is kept until it fails.
	c := newClient(t, allowToken, servers[:1], mdclient.WithUsername("pub"),
		mdclient.WithReconnectTimeInterval(20*time.Millisecond), mdclient.WithReconnectMaxDelay(100*time.Millisecond))

	first := <-c.PublishAsync(ctxTimeout(t, 10*time.Second), mdclient.PublishRequest{Message: mdclient.Message{Subject: "alldown/first"}})
	wantStatus(t, first.Status, first.Err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)
	if first.Server != servers[0] {
		t.Fatalf("answer from %q, want %s", first.Server, servers[0])
	}
	if err := c.SetServers(servers); err != nil {
		t.Fatal(err)
	}
	cur, other := 0, 1
	// publish makes n requests (closures "0".."n-1", payloads group and i) with results on
	// a channel of their own.
	publish := func(ctx context.Context, n int, group byte, subject func(i int) string, retained bool) chan mdclient.PublishResult {
		ch := make(chan mdclient.PublishResult, n)
		for i := range n {
			c.PublishAsync(ctx, mdclient.PublishRequest{Result: ch, Message: mdclient.Message{
				Subject: subject(i), Content: []byte{group, 0, 0, byte(i)}, Closure: strconv.Itoa(i), Retained: retained}})
		}
		return ch
	}

	// Freeze it and write messages to it that it will never acknowledge.
	nodes[cur].Stop()
	writtenBy := time.Now().Add(2 * time.Second)
	wctx, wcancel := context.WithDeadline(context.Background(), writtenBy)
	defer wcancel()
	written := publish(wctx, nWritten, 0, func(int) string { return "alldown/written" }, false)
	want := nWritten * aliasedLen(4)
	var u int
	var uerr error
	if !eventually(time.Until(writtenBy)-time.Second, func() bool {
		u, uerr = unreadBytes(serverPort(t, servers[cur]))
		return uerr != nil || u >= want
	}) {
		t.Fatalf("only %d of ≥ %d bytes written to the frozen node before the deadline", u, want)
	}
	if uerr != nil {
		t.Fatalf("reading the socket queues: %v", uerr)
	}

	// Kill every node, the one in use last so that the client cannot fail over.
	resentBefore := c.Stats().Resent
	nodes[other].Kill()
	nodes[cur].Kill()
	// The client notices: the lost connection and the failed attempt on the other node.
	for _, s := range []string{servers[cur], servers[other]} {
		awaitEvent(t, c, mdclient.NotifyServerDown, s, 5*time.Second)
	}

	// Requests made while no node is up.
	expiredBy := time.Now().Add(300 * time.Millisecond)
	ectx, ecancel := context.WithDeadline(context.Background(), expiredBy)
	defer ecancel()
	expired := publish(ectx, nExpired, 1, func(int) string { return "alldown/expired" }, false)
	// Retained, each on its own topic, so that a subscriber arriving after the restart can
	// tell that they were published.
	waiting := publish(ctxTimeout(t, 20*time.Second), nWaiting, 2, func(i int) string { return "alldown/late/" + strconv.Itoa(i) }, true)

	collectEach(t, expired, nExpired, 10*time.Second, func(i int, r mdclient.PublishResult) {
		if at := time.Now(); at.Before(expiredBy) {
			t.Errorf("never written %d: result %v before its context ended", i, at.Sub(expiredBy))
		}
		if r.Status != mdclient.NotifyPublishFailed || !errors.Is(r.Err, mdclient.ErrFailed) || !errors.Is(r.Err, mdclient.ErrTimeout) ||
			!errors.Is(r.Err, mdclient.ErrNoServers) || !errors.Is(r.Err, context.DeadlineExceeded) {
			t.Errorf("never written %d: %s %v, want NOTIFY_PUBLISH_FAILED wrapping ErrFailed, ErrTimeout, ErrNoServers and context.DeadlineExceeded", i, r.Status, r.Err)
		}
	})
	collectEach(t, written, nWritten, 10*time.Second, func(i int, r mdclient.PublishResult) {
		if at := time.Now(); at.Before(writtenBy) {
			t.Errorf("written %d: result %v before its context ended", i, at.Sub(writtenBy))
		}
		if r.Status != mdclient.NotifyPublishTimeout || !errors.Is(r.Err, mdclient.ErrTimeout) {
			t.Errorf("written %d: %s %v, want NOTIFY_PUBLISH_TIMEOUT wrapping ErrTimeout", i, r.Status, r.Err)
		}
	})
	// The messages written to the node that died were queued to be sent again.
	if resent := c.Stats().Resent - resentBefore; resent != nWritten {
		t.Errorf("%d messages queued for resending after the kill, want %d", resent, nWritten)
	}

	// Those with time left are still waiting.
	select {
	case r := <-waiting:
		t.Fatalf("%s: result %s %v while no server was up", r.Closure, r.Status, r.Err)
	default:
	}
	nodes[other].Restart(t)
	restartedAt := time.Now()
	collectEach(t, waiting, nWaiting, 10*time.Second, func(i int, r mdclient.PublishResult) {
		// Retained and with no subscriber yet: mosquitto stores it and answers 0x10.
		if r.Status != mdclient.NotifyPublishNoSubscriber && r.Status != mdclient.NotifyPublishOK {
			t.Errorf("waiting %d: %s %v after the restart, want it published", i, r.Status, r.Err)
		}
		if r.Server != servers[other] {
			t.Errorf("waiting %d: answered by %q, want the restarted %s", i, r.Server, servers[other])
		}
	})
	t.Logf("waiting requests published %v after the restart", time.Since(restartedAt).Round(time.Millisecond))
	if _, _, seen, ok := nextEvent(c, mdclient.NotifyServerUp, servers[other], 5*time.Second); !ok {
		t.Errorf("no NOTIFY_SERVER_UP for the restarted %s; events: %v", servers[other], seen)
	}
	// The restarted node really has them.
	sub := nodes[other].Subscribe(t, "sub", subPassword, "alldown/late/#")
	have := map[string]bool{}
	for len(have) < nWaiting {
		m := sub.Next(t)
		if !m.Retain || len(m.Payload) != 4 || m.Topic != "alldown/late/"+strconv.Itoa(int(m.Payload[3])) {
			t.Fatalf("unexpected message %+v", m)
		}
		have[m.Topic] = true
	}
}

// reconnectPolicy is the reconnect policy as documented in options.go, to bound what the
// client may do: attempts in rounds of one per server, the attempts of a round one after
// another at once; the first round of a quick phase of quick rounds waits quickDelay,
// then a truncated exponential backoff from interval to maxDelay, every backoff delay
// drawn from [d/2, d].
type reconnectPolicy struct {
	quick              int
	quickDelay         time.Duration
	interval, maxDelay time.Duration
	servers            int
}

// roundDelay is the range of the delay before round n, where n is the number of rounds
// in which every server failed since the last working connection (0 for the very first).
func (p reconnectPolicy) roundDelay(n int) (lo, hi time.Duration) {
	if n == 0 || n < p.quick {
		return p.quickDelay, p.quickDelay
	}
	d := p.interval
	for i := p.quick; i < n && d < p.maxDelay; i++ {
		d *= 2
	}
	d = min(d, p.maxDelay)
	return d / 2, d
}

// delayRange is the range of the delay before attempt k (0 for the very first).
func (p reconnectPolicy) delayRange(k int) (lo, hi time.Duration) {
	if k%p.servers != 0 {
		return 0, 0
	}
	return p.roundDelay(k / p.servers)
}

// maxAttempts is the most attempts the policy allows within w of the first one.
func (p reconnectPolicy) maxAttempts(w time.Duration) int {
	var at time.Duration
	for n := 1; ; n++ {
		lo, _ := p.delayRange(n)
		at += lo
		if at > w {
			return n
		}
		if n > 100000 {
			return n // a policy without delays: no bound worth the name
		}
	}
}

// connLog is a TCP forwarder in front of a server that records every connection it
// accepts: when, and the reason code of the CONNACK the server answered with. It sees a
// client's connection attempts from outside the client. An attempt's time is taken as
// it is accepted, before a byte of it is forwarded: so the time between two attempts is
// at least the client's delay between the end of the first and the start of the second.
type connLog struct {
	ln     net.Listener
	target string // host:port
	wg     sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  []*loggedConn
	socks  []net.Conn // closed by close
}

type loggedConn struct {
	at    time.Time
	reply []byte // the first bytes the server sent (up to 512); guarded by connLog.mu
}

// attempt is a connection a connLog accepted.
type attempt struct {
	server string        // as the client names it
	at     time.Time     // when it was accepted
	reason int           // the reason code of the server's CONNACK; -1 while none came
	since  time.Duration // at, relative to the first attempt of the list it is in
}

func (a attempt) String() string {
	return fmt.Sprintf("%s at +%v: CONNACK %#x", a.server, a.since.Round(time.Millisecond), a.reason)
}

// newConnLog starts a connLog in front of target ("host:port"), closed when the test ends.
func newConnLog(t *testing.T, target string) *connLog {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &connLog{ln: ln, target: target}
	l.wg.Add(1)
	go l.accept()
	t.Cleanup(l.close)
	return l
}

// tcp and ws are the connLog's address as a server entry for MQTT over TCP and over
// WebSocket.
func (l *connLog) tcp() string { return "tcp://" + l.ln.Addr().String() }
func (l *connLog) ws() string  { return "ws://" + l.ln.Addr().String() + "/mqtt" }

func (l *connLog) accept() {
	defer l.wg.Done()
	for {
		client, err := l.ln.Accept()
		if err != nil {
			return
		}
		lc := &loggedConn{at: time.Now()}
		server, err := net.Dial("tcp", l.target)
		l.mu.Lock()
		l.conns = append(l.conns, lc)
		ok := err == nil && !l.closed
		if ok {
			l.socks = append(l.socks, client, server)
		}
		l.mu.Unlock()
		if !ok {
			client.Close()
			if server != nil {
				server.Close()
			}
			continue
		}
		l.wg.Add(2)
		go func() {
			defer l.wg.Done()
			io.Copy(server, client)
			server.Close()
			client.Close()
		}()
		go func() {
			defer l.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := server.Read(buf)
				if n > 0 {
					l.mu.Lock()
					lc.reply = append(lc.reply, buf[:min(n, 512-len(lc.reply))]...)
					l.mu.Unlock()
					if _, err := client.Write(buf[:n]); err != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			client.Close()
			server.Close()
		}()
	}
}

func (l *connLog) close() {
	l.ln.Close()
	l.mu.Lock()
	l.closed = true
	for _, c := range l.socks {
		c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// attempts returns the connections accepted so far, named server, in order.
func (l *connLog) attempts(server string) []attempt {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]attempt, len(l.conns))
	for i, c := range l.conns {
		out[i] = attempt{server: server, at: c.at, reason: connackReason(c.reply)}
	}
	return out
}

// allAttempts merges the attempts on several connLogs (servers[i] names logs[i]) in the
// order they were accepted.
func allAttempts(logs []*connLog, servers []string) []attempt {
	var out []attempt
	for i, l := range logs {
		out = append(out, l.attempts(servers[i])...)
	}
	slices.SortFunc(out, func(a, b attempt) int { return a.at.Compare(b.at) })
	for i := range out {
		out[i].since = out[i].at.Sub(out[0].at)
	}
	return out
}

// connackReason returns the reason code of the CONNACK that starts what a server sent
// (for a WebSocket, its first frame after the HTTP response), or -1 if it is not there.
func connackReason(b []byte) int {
	if bytes.HasPrefix(b, []byte("HTTP/")) {
		_, rest, ok := bytes.Cut(b, []byte("\r\n\r\n"))
		// A binary frame from the server: unmasked, its length in the second byte.
		if !ok || len(rest) < 2 || rest[0] != 0x82 || rest[1] >= 126 {
			return -1
		}
		b = rest[2:]
	}
	// CONNACK: type 2, a one-byte remaining length, the acknowledge flags, the reason.
	if len(b) < 4 || b[0] != 0x20 {
		return -1
	}
	return int(b[3])
}

// TestTokenRefused: servers that refuse the entitlement token (CONNACK 0x87). A connLog
// in front of each server shows the client's connection attempts and how each was
// answered.
func TestTokenRefused(t *testing.T) {
	refuse1 := mosquittoNode(t, "some-other-token")
	refuse2 := mosquittoNode(t, "yet-another-token")
	accept := mosquittoNode(t, allowToken)

	// One server refuses, the other accepts: the client ends up on the accepting one. The
	// weights make the refusing server the first choice and the accepting one a standby.
	t.Run("some", func(t *testing.T) {
		sub := accept.Subscribe(t, "sub", subPassword, "token/#")
		refusing := newConnLog(t, refuse1.WSHostPort())
		servers := []string{"100 " + refusing.ws(), "0 " + accept.TCPAddr()}
		c := newClient(t, allowToken, servers, mdclient.WithUsername("pub"))
		ctx := ctxTimeout(t, 10*time.Second)
		const n = 50
		results := make(chan mdclient.PublishResult, n)
		for i := range n {
			c.PublishAsync(ctx, mdclient.PublishRequest{Result: results, Message: mdclient.Message{
				Subject: "token/some", Content: []byte{0, 0, 0, byte(i)}, Closure: strconv.Itoa(i)}})
		}
		collectEach(t, results, n, 10*time.Second, func(_ int, r mdclient.PublishResult) {
			wantStatus(t, r.Status, r.Err, mdclient.NotifyPublishOK, nil)
			if r.Server != accept.TCPAddr() {
				t.Fatalf("%s: OK from %q, want the accepting %s", r.Closure, r.Server, accept.TCPAddr())
			}
		})
		for range n {
			sub.Next(t)
		}
		// The refusing server was tried, refused the token, and was reported down.
		attempts := refusing.attempts(refusing.ws())
		if !slices.ContainsFunc(attempts, func(a attempt) bool { return a.reason == 0x87 }) {
			t.Errorf("no attempt on %s answered with a refusal (0x87); attempts: %v", refusing.ws(), attempts)
		}
		var evs []mdclient.Event
		for len(evs) < 2 {
			select {
			case ev := <-c.Events():
				evs = append(evs, ev)
			case <-ctx.Done():
				t.Fatalf("events so far: %+v", evs)
			}
		}
		if evs[0].Type != mdclient.NotifyServerDown || evs[0].Server != refusing.ws() || evs[0].Err == nil || !strings.Contains(evs[0].Err.Error(), "0x87") ||
			evs[1].Type != mdclient.NotifyServerUp || evs[1].Server != accept.TCPAddr() {
			t.Errorf("events %+v, want DOWN %s (0x87), UP %s", evs, refusing.ws(), accept.TCPAddr())
		}
	})

	// Two weighted servers refuse, a standby accepts. SetServers documents weight 0 as "a
	// standby, chosen only when no other server is left".
	t.Run("standby", func(t *testing.T) {
		logs := []*connLog{newConnLog(t, refuse1.WSHostPort()), newConnLog(t, refuse2.TCPHostPort()), newConnLog(t, accept.WSHostPort())}
		names := []string{logs[0].ws(), logs[1].tcp(), logs[2].ws()}
		standby := names[2]
		c := newClient(t, allowToken, []string{names[0], names[1], "0 " + standby}, mdclient.WithUsername("pub"),
			mdclient.WithReconnectTimeInterval(20*time.Millisecond), mdclient.WithReconnectMaxDelay(40*time.Millisecond))
		res := <-c.PublishAsync(ctxTimeout(t, 1500*time.Millisecond), mdclient.PublishRequest{Message: mdclient.Message{Subject: "token/standby"}})
		if res.Status != mdclient.NotifyPublishNoSubscriber && len(logs[2].attempts(standby)) == 0 {
			t.Fatalf("%s %v; the standby %s was never tried while both weighted servers refused the token (attempts: %v)",
				res.Status, res.Err, standby, allAttempts(logs, names))
		}
		wantStatus(t, res.Status, res.Err, mdclient.NotifyPublishNoSubscriber, mdclient.ErrNoSubscriber)
		if res.Server != standby {
			t.Errorf("answered by %q, want the standby %s", res.Server, standby)
		}
	})

	// Every server refuses: publishes are DENIED, and the client keeps trying at the pace
	// of its reconnect policy, not in a tight loop.
	t.Run("all", func(t *testing.T) {
		p := reconnectPolicy{quick: 2, quickDelay: 0, interval: 100 * time.Millisecond, maxDelay: 400 * time.Millisecond, servers: 2}
		const window = 2500 * time.Millisecond
		logs := []*connLog{newConnLog(t, refuse1.WSHostPort()), newConnLog(t, refuse2.TCPHostPort())}
		servers := []string{logs[0].ws(), logs[1].tcp()}
		mark := len(refuse2.Log())
		started := time.Now()
		c := newClient(t, allowToken, servers, mdclient.WithUsername("pub"),
			mdclient.WithQuickReconnectMaxRetries(p.quick), mdclient.WithQuickReconnectInitialDelay(p.quickDelay),
			mdclient.WithReconnectPolicy(mdclient.TruncatedExponentialBackoff),
			mdclient.WithReconnectTimeInterval(p.interval), mdclient.WithReconnectMaxDelay(p.maxDelay))
		ctx := ctxTimeout(t, 10*time.Second)

		// One publish at once, one in the middle of the window: both DENIED.
		st, err := c.Publish(ctx, mdclient.Message{Subject: "token/all", Content: []byte("x")})
		wantStatus(t, st, err, mdclient.NotifyPublishDenied, mdclient.ErrDenied)
		mid := time.NewTimer(window / 2)
		<-mid.C
		st, err = c.Publish(ctx, mdclient.Message{Subject: "token/all", Content: []byte("y")})
		wantStatus(t, st, err, mdclient.NotifyPublishDenied, mdclient.ErrDenied)

		// Wait until the window after the first attempt is over, then count.
		atts := allAttempts(logs, servers)
		if len(atts) == 0 {
			t.Fatal("no connection attempt on either server")
		}
		end := time.NewTimer(time.Until(atts[0].at.Add(window)))
		<-end.C
		inWindow := len(slices.DeleteFunc(allAttempts(logs, servers), func(a attempt) bool { return a.since > window }))
		// Each attempt was refused: the answer to the last ones of the window may still be
		// on its way.
		eventually(5*time.Second, func() bool {
			atts = allAttempts(logs, servers)
			return !slices.ContainsFunc(atts[:inWindow], func(a attempt) bool { return a.reason < 0 })
		})
		for k, a := range atts {
			if a.reason != 0x87 && (a.reason >= 0 || k < inWindow) {
				t.Errorf("attempt %d, on %s, answered with %#x, want a refusal 0x87 (-0x1: no CONNACK)", k, a.server, a.reason)
			}
		}
		limit := p.maxAttempts(window)
		t.Logf("%d attempts within %v of the first (the policy allows at most %d)", inWindow, window, limit)
		if inWindow > limit {
			t.Errorf("%d connection attempts within %v, the policy allows at most %d: %v", inWindow, window, limit, atts)
		}
		if inWindow < p.quick+2 {
			t.Errorf("only %d connection attempts within %v: the client stopped trying", inWindow, window)
		}
		// Each delay after the quick phase is at least half the policy's delay.
		for k := 1; k < len(atts); k++ {
			lo, _ := p.delayRange(k)
			if gap := atts[k].at.Sub(atts[k-1].at); gap < lo {
				t.Errorf("attempt %d came %v after the previous one, the policy says ≥ %v", k, gap, lo)
			}
		}
		// Cross-check on the server side: the TCP node saw no more connections than the
		// policy allows in the whole time since the client started.
		conns := strings.Count(refuse2.Log()[mark:], "New connection from")
		if limit := p.maxAttempts(time.Since(started)); conns > limit {
			t.Errorf("mosquitto %s saw %d connections in %v, the policy allows at most %d", refuse2.TCPAddr(), conns, time.Since(started), limit)
		}
		// Both servers were reported down with the refusal.
		downs := map[string]bool{}
		for more := true; more; {
			select {
			case ev := <-c.Events():
				if ev.Type == mdclient.NotifyServerUp {
					t.Errorf("NOTIFY_SERVER_UP %s while every server refuses", ev.Server)
				}
				if ev.Type == mdclient.NotifyServerDown && ev.Err != nil && strings.Contains(ev.Err.Error(), "0x87") {
					downs[ev.Server] = true
				}
			default:
				more = false
			}
		}
		if !downs[servers[0]] || !downs[servers[1]] {
			t.Errorf("NOTIFY_SERVER_DOWN with the refusal for %v, want both %v", downs, servers)
		}
	})
}

// TestKillsInARow: publishing resumes within a second after every kill of the node in
// use, whatever failed before — a second node killed right after the first one took over
// (while the first is still dead), then kills with the dead nodes restarted in between —
// and every request still gets exactly one result, acknowledged.
func TestKillsInARow(t *testing.T) {
	const (
		rate  = 2000
		n     = 200000 // more than the test needs: it stops the stream
		topic = "kills/stream"
	)
	nodes := []*mosquittotest.Broker{mosquittoNode(t, allowToken), mosquittoNode(t, allowToken), mosquittoNode(t, allowToken)}
	servers := []string{nodes[0].TCPAddr(), nodes[1].WSAddr(), nodes[2].TCPAddr()}
	node := map[string]*mosquittotest.Broker{}
	for i, s := range servers {
		node[s] = nodes[i]
	}
	c := newClient(t, allowToken, servers, mdclient.WithUsername("pub"))
	led := newLedger("kills", "kills/")
	results := make(chan mdclient.PublishResult, 4096)
	stream := startStream(t, c, ctxTimeout(t, 120*time.Second), led, topic, "", rate, n, 0, results)

	// The results go to the ledger as they come, and every OK's server to oks.
	type ok struct {
		server string
		at     time.Time
	}
	oks := make(chan ok, 4096)
	stopReading := led.read("results", results, func(r mdclient.PublishResult) {
		if acknowledged(r.Status) { // no subscriber here: NO_SUBSCRIBER
			select {
			case oks <- ok{r.Server, time.Now()}:
			default: // the test is not watching now
			}
		}
	})

	// nextOK returns the next OK that pass accepts, failing the test (saying what was
	// waited for) when none comes for 10 s.
	nextOK := func(what string, pass func(ok) bool) ok {
		t.Helper()
		timeout := time.NewTimer(10 * time.Second)
		defer timeout.Stop()
		for {
			select {
			case o := <-oks:
				if pass(o) {
					return o
				}
			case <-timeout.C:
				t.Fatalf("%s: nothing acknowledged for 10s", what)
			}
		}
	}
	inUse := func() string { // the server of an OK that came after now
		since := time.Now()
		return nextOK("the node in use", func(o ok) bool { return o.at.After(since) }).server
	}
	// kill kills the node serving victim and returns the server of the first OK from
	// another one, failing the test unless it came within a second.
	kill := func(step, victim string) string {
		t.Helper()
		node[victim].Kill()
		killed := time.Now()
		// An OK from the victim was acknowledged before the kill and read after it.
		o := nextOK(step+", after killing "+victim, func(o ok) bool { return o.server != victim })
		if took := o.at.Sub(killed); took > time.Second {
			t.Errorf("%s: publishing resumed on %s %v after killing %s, want within 1s", step, o.server, took.Round(time.Millisecond), victim)
		} else {
			t.Logf("%s: killed %s, resumed on %s after %v", step, victim, o.server, took.Round(time.Millisecond))
		}
		return o.server
	}

	first := inUse()
	second := kill("kill 1", first)
	third := kill("kill 2, right after the first (the first still dead)", second)
	if third == first || third == second {
		t.Fatalf("resumed on %s, a killed node", third)
	}
	node[first].Restart(t)
	node[second].Restart(t)
	next := kill("kill 3, the others restarted", inUse())
	node[third].Restart(t)
	kill("kill 4, the others restarted", next)

	// Hold the producer, wait for every result, then end the stream (whose end cancels
	// what is still in flight).
	resume, _ := stream.Pause()
	missing := led.waitResults(time.Now().Add(30 * time.Second))
	stopReading()
	stream.finish()
	resume()
	if missing > 0 {
		t.Errorf("%d of %d requests without a result 30 s after the stream was held", missing, stream.sent.Load())
	}
	failViolations(t, "", led.onceViolations())
	if statuses := led.counts().Status; statuses[mdclient.NotifyPublishNoSubscriber] != int(stream.sent.Load()) {
		t.Errorf("outcomes %v for %d requests, want all acknowledged (NO_SUBSCRIBER: nobody subscribes)", statuses, stream.sent.Load())
	}
}
