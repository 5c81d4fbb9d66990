package cluster

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/mdclient/mdclient/conn"
)

// stableAfter is how long a connection must last for the next attempt to start the
// reconnect policy afresh.
const stableAfter = time.Second

// Config is what the membership actor needs. Every field is required unless noted.
type Config struct {
	Policy      Policy
	NotifyAfter int // failed attempts on a server before it is reported down; at least 1
	// Conn returns the settings for the next connection, so a new token applies from then on.
	Conn func() *conn.Config
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
	return &Cluster{cfg: cfg, updates: make(chan []Server, 1)}
}

// SetServers replaces the server list. A live connection to a server still listed is
// kept until it fails; one to a server no longer listed is closed gracefully. The next
// choice is made from the new list. It never blocks.
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
	failures int  // consecutive failed attempts
	refused  bool // refused our credentials since the last time every server did
	tried    bool // tried in the current round of picks
}

// Run is the actor: pick a server, wait as the policy says, dial, hand the connection to
// the engine, wait for it to end, repeat. It returns when ctx ends, after closing the live
// connection and waiting for its goroutines.
func (c *Cluster) Run(ctx context.Context) error {
	var members []member
	streak := 0 // consecutive failed attempts since the last working connection
	last := -1  // index of the server used or tried last
	replace := func(list []Server) {
		members = make([]member, len(list))
		for i, s := range list {
			members[i].Server = s
		}
		last = -1
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
		if d := c.cfg.Policy.Delay(streak, c.cfg.Rand); d > 0 {
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
		i := pick(members, last, c.cfg.Rand)
		last = i
		members[i].tried = true
		m := &members[i]
		cn, err := c.cfg.Dial(ctx, m.Endpoint, c.cfg.Conn())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			streak++
			c.failed(members, m, err)
			continue
		}
		connectedAt := time.Now()
		m.failures = 0
		for j := range members {
			members[j].refused, members[j].tried = false, false
		}
		name := m.Endpoint.String()
		c.cfg.Logger.Info("mdclient: connected", "server", name, "receive_maximum", cn.Limits().ReceiveMaximum)
		c.cfg.Notify(true, name, nil)
		select {
		case c.cfg.Events <- conn.Event{Conn: cn, Up: true}:
		case <-c.cfg.Quit:
			cn.Unstarted()
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
				if !contains(list, cn.Endpoint()) {
					// The server in use is no longer listed: leave it, gracefully; what
					// it has not acknowledged is resent on the next connection.
					c.cfg.Logger.Info("mdclient: server removed from the list, moving", "server", name)
					cn.Close()
				}
			case <-ctx.Done():
				cn.Close()
				<-cn.Done()
				return nil
			}
		}
		if i := index(members, cn.Endpoint()); i >= 0 {
			last = i // avoid it next time if it is still listed
		}
		// A connection that dies young (a server that drops us on some message, say) counts
		// as a failed attempt, so that reconnecting backs off rather than spins.
		if time.Since(connectedAt) >= stableAfter {
			streak = 0
		} else {
			streak++
		}
		c.cfg.Logger.Warn("mdclient: connection lost", "server", name, "reason", cn.Err())
		c.cfg.Notify(false, name, cn.Err())
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

// pick chooses the next server. Servers are taken in rounds: within a round, a weighted
// server not yet tried is chosen at random by weight; weight-0 servers (standbys) only
// once every weighted one has been tried; then a new round begins. The server used last
// is avoided while another is left, so a failover always moves on. A working connection
// ends the round.
func pick(members []member, last int, rnd *rand.Rand) int {
	for range 2 {
		if i := pickWeighted(members, last, rnd); i >= 0 {
			return i
		}
		if i := pickStandby(members, last, rnd); i >= 0 {
			return i
		}
		for j := range members {
			members[j].tried = false
		}
	}
	return last // the only server
}

func pickWeighted(members []member, last int, rnd *rand.Rand) int {
	total := 0
	for i, m := range members {
		if i != last && !m.tried {
			total += m.Weight
		}
	}
	if total == 0 {
		return -1
	}
	n := rnd.IntN(total)
	for i, m := range members {
		if i == last || m.tried {
			continue
		}
		if n < m.Weight {
			return i
		}
		n -= m.Weight
	}
	return -1
}

func pickStandby(members []member, last int, rnd *rand.Rand) int {
	count := 0
	for i, m := range members {
		if i != last && !m.tried && m.Weight == 0 {
			count++
		}
	}
	if count == 0 {
		return -1
	}
	n := rnd.IntN(count)
	for i, m := range members {
		if i != last && !m.tried && m.Weight == 0 {
			if n == 0 {
				return i
			}
			n--
		}
	}
	return -1
}
