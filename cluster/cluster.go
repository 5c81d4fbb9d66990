package cluster

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/mdclient/mdclient/conn"
)

// stableAfter is how long a connection must last to count as working: one that ends
// sooner (a server that drops us on some message, say) is a failed attempt, so that
// reconnecting backs off rather than spins.
const stableAfter = time.Second

// errRemoved ends a connection to a server that SetServers took off the list.
var errRemoved = errors.New("mdclient: server removed from the list")

// Config is what the membership actor needs. Every field is required unless noted.
type Config struct {
	Policy      Policy
	NotifyAfter int // failed attempts on a server before it is reported down; at least 1
	// Conn returns the settings for the next connection attempt, so that a new token
	// applies from then on; it runs within the attempt's ctx. An error fails the attempt.
	Conn func(ctx context.Context) (*conn.Config, error)
	// Events carries Up and Refused to the engine, and every connection's own events.
	Events chan<- conn.Event
	Quit   <-chan struct{} // closed when the engine no longer reads Events
	// Notify reports a server going up (err nil) or down. It is called on the actor's
	// goroutine and must not block.
	Notify func(up bool, server string, err error)
	Logger *slog.Logger
	Rand   *rand.Rand // optional; seeded at random when nil
	// Dial is optional; conn.Dial when nil. Tests replace it to inject faults.
	Dial func(context.Context, conn.Endpoint, *conn.Config) (*conn.Conn, error)
}

// Cluster is the membership actor. All of its state lives in Run's goroutine; the only way
// in is SetServers.
type Cluster struct {
	cfg     Config
	updates chan []Server // SetServers → Run; capacity 1, the latest list wins
}

// New returns an actor that does nothing until Run.
func New(cfg Config) *Cluster {
	if cfg.Rand == nil {
		cfg.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if cfg.Dial == nil {
		cfg.Dial = conn.Dial
	}
	if cfg.NotifyAfter < 1 {
		cfg.NotifyAfter = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cluster{cfg: cfg, updates: make(chan []Server, 1)}
}

// SetServers replaces the server list. An attempt still dialing is abandoned; a live
// connection to a server still listed is kept until it fails, one to a server no longer
// listed is closed gracefully. The next choice is made from the new list, at once. It
// never blocks.
func (c *Cluster) SetServers(servers []Server) {
	for {
		select {
		case c.updates <- servers:
			return
		default:
		}
		select {
		case <-c.updates: // drop the older list that Run has not taken yet
		default:
		}
	}
}

// member is a server of the current list with what Run has learnt of it.
type member struct {
	Server
	failures int  // consecutive failed attempts to connect
	lost     bool // its last connection was lost, or it never connected since a failure
	refused  bool // refused our credentials since the last time every server did
	tried    bool // tried in the current round
}

// penalty orders the servers of a round: those that have not failed lately come first.
func (m *member) penalty() int {
	p := m.failures
	if m.lost {
		p++
	}
	return p
}

// Run is the actor. It tries the servers in rounds: within a round every server is tried
// once, at once one after another, the least-failed first and by weight among equals;
// only a new round, after every server failed, waits for the policy's delay. (So after a
// failover a live server is reached without delay whatever failed before it.) A working
// connection ends the round. It returns when ctx ends, after closing the live connection
// and waiting for its goroutines.
func (c *Cluster) Run(ctx context.Context) error {
	var members []member
	rounds := 0 // consecutive rounds in which every server failed
	last := -1  // index of the server used or tried last
	replace := func(list []Server) {
		members = make([]member, len(list))
		for i, s := range list {
			members[i].Server = s
		}
		last, rounds = -1, 0
	}
	for {
		if len(members) == 0 {
			select {
			case list := <-c.updates:
				replace(list)
				continue
			case <-ctx.Done():
				return nil
			}
		}
		if !untried(members) {
			rounds++
			newRound(members)
		}
		if !anyTried(members) {
			if d := c.cfg.Policy.Delay(rounds, c.cfg.Rand); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case list := <-c.updates:
					t.Stop()
					replace(list)
					continue
				case <-ctx.Done():
					t.Stop()
					return nil
				}
			}
		}
		i := pick(members, last, c.cfg.Rand)
		last = i
		members[i].tried = true
		m := &members[i]
		ep := m.Endpoint // m moves if the list is replaced while connected
		cn, err, list := c.dial(ctx, ep)
		switch {
		case list != nil:
			replace(list)
			continue
		case ctx.Err() != nil:
			return nil
		case err != nil:
			c.failed(members, m, err)
			continue
		}
		connectedAt := time.Now()
		m.failures, m.lost = 0, false
		for j := range members {
			members[j].refused = false
		}
		name := ep.String()
		c.cfg.Logger.Info("mdclient: connected", "server", name, "receive_maximum", cn.Limits().ReceiveMaximum)
		c.cfg.Notify(true, name, nil)
		select {
		case c.cfg.Events <- conn.Event{Conn: cn, Up: true}:
		case <-c.cfg.Quit:
			cn.Close(nil)
			return nil
		}
		cn.Start(c.cfg.Events, c.cfg.Quit)
	connected:
		for {
			select {
			case <-cn.Done():
				break connected
			case list := <-c.updates:
				replace(list)
				if !contains(list, ep) {
					// The server in use is no longer listed: leave it, gracefully; what
					// it has not acknowledged is resent on the next connection.
					c.cfg.Logger.Info("mdclient: server removed from the list, moving", "server", name)
					cn.Close(errRemoved)
				}
			case <-ctx.Done():
				cn.Close(nil)
				<-cn.Done()
				return nil
			}
		}
		if errors.Is(cn.Err(), conn.ErrClosed) {
			// The engine closed it: the client is closing, and this is no server going down.
			<-ctx.Done()
			return nil
		}
		if j := index(members, ep); j >= 0 {
			last = j // avoid it next time if it is still listed
			members[j].lost = true
			members[j].tried = true
		}
		if time.Since(connectedAt) >= stableAfter {
			rounds = 0
			newRound(members)
		}
		c.cfg.Logger.Warn("mdclient: connection lost", "server", name, "reason", cn.Err())
		c.cfg.Notify(false, name, cn.Err())
	}
}

// dial runs one attempt, abandoning it when a new server list arrives (returned, with
// no connection) or ctx ends.
func (c *Cluster) dial(ctx context.Context, ep conn.Endpoint) (*conn.Conn, error, []Server) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		cn  *conn.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		cfg, err := c.cfg.Conn(dctx)
		if err != nil {
			done <- result{nil, err}
			return
		}
		cn, err := c.cfg.Dial(dctx, ep, cfg)
		done <- result{cn, err}
	}()
	abandon := func() {
		cancel()
		if r := <-done; r.cn != nil {
			r.cn.Close(nil)
		}
	}
	select {
	case r := <-done:
		return r.cn, r.err, nil
	case list := <-c.updates:
		abandon()
		return nil, nil, list
	case <-ctx.Done():
		abandon()
		return nil, ctx.Err(), nil
	}
}

func untried(members []member) bool {
	for i := range members {
		if !members[i].tried {
			return true
		}
	}
	return false
}

func anyTried(members []member) bool {
	for i := range members {
		if members[i].tried {
			return true
		}
	}
	return false
}

func newRound(members []member) {
	for i := range members {
		members[i].tried = false
	}
}

func contains(list []Server, ep conn.Endpoint) bool {
	for _, s := range list {
		if s.Endpoint == ep {
			return true
		}
	}
	return false
}

func index(members []member, ep conn.Endpoint) int {
	for i, m := range members {
		if m.Endpoint == ep {
			return i
		}
	}
	return -1
}

// failed records a failed attempt on m: it reports m down after NotifyAfter failures, and
// tells the engine when every server has refused the credentials.
func (c *Cluster) failed(members []member, m *member, err error) {
	m.failures++
	name := m.Endpoint.String()
	c.cfg.Logger.Warn("mdclient: connect failed", "server", name, "attempt", m.failures, "reason", err)
	if m.failures == c.cfg.NotifyAfter {
		c.cfg.Notify(false, name, err)
	}
	var refused *conn.RefusedError
	if !errors.As(err, &refused) || !refused.NotAuthorized() {
		return
	}
	m.refused = true
	for i := range members {
		if !members[i].refused {
			return
		}
	}
	for i := range members {
		members[i].refused = false
	}
	select {
	case c.cfg.Events <- conn.Event{Refused: err}:
	case <-c.cfg.Quit:
	}
}

// pick chooses the next server of the round: a weighted server not yet tried, else a
// standby (weight 0) not yet tried; among those, the ones with the lowest penalty, chosen
// at random by weight (standbys alike). The server used last is avoided while another is
// left, so a failover always moves on. It returns last when nothing else is left.
func pick(members []member, last int, rnd *rand.Rand) int {
	for _, standby := range [2]bool{false, true} {
		candidate := func(i int) bool {
			m := &members[i]
			return !m.tried && (m.Weight == 0) == standby && (i != last || len(members) == 1)
		}
		weight := func(m *member) int { return max(m.Weight, 1) }
		best, total := -1, 0
		for i := range members {
			if !candidate(i) {
				continue
			}
			switch p := members[i].penalty(); {
			case best < 0 || p < best:
				best, total = p, weight(&members[i])
			case p == best:
				total += weight(&members[i])
			}
		}
		if total == 0 {
			continue
		}
		n := rnd.IntN(total)
		for i := range members {
			if !candidate(i) || members[i].penalty() != best {
				continue
			}
			if n -= weight(&members[i]); n < 0 {
				return i
			}
		}
	}
	if last >= 0 && last < len(members) {
		return last
	}
	return 0
}
