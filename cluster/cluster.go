package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strconv"
	"strings"
	"sync"
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
	// FollowRedirects makes a Server Reference (CONNACK or DISCONNECT 0x9C, 0x9D) send the
	// next attempt to the server it names, at most maxRedirects times in a row.
	FollowRedirects bool
	// AttemptTimeout, when not 0, bounds each connection attempt from the outside too:
	// past it the attempt is given up even if Conn or Dial (user code among them) does
	// not return, and left to end on its own.
	AttemptTimeout time.Duration
	// Slots is how many connections to keep at once, each to a different server of the
	// list while it has enough (else several to one); Up events name the slot as their
	// Lane. At least 1.
	Slots int
}

// Cluster is the membership actor: one goroutine per connection slot, each owning its own
// state; the only way in is SetServers, and the one thing the slots share is which
// server each has claimed (claims), so that they spread over the list.
type Cluster struct {
	cfg    Config
	slots  []chan []Server // SetServers → each slot's loop; capacity 1, the latest list wins
	rands  []*rand.Rand
	claims claims
}

// claims records the server each slot is connected or connecting to. Each slot writes only
// its own entry; all read the others' when they pick.
type claims struct {
	mu  sync.Mutex
	eps []conn.Endpoint // by slot
	has []bool
}

func (cl *claims) set(slot int, ep conn.Endpoint) {
	cl.mu.Lock()
	cl.eps[slot], cl.has[slot] = ep, true
	cl.mu.Unlock()
}

func (cl *claims) drop(slot int) {
	cl.mu.Lock()
	cl.has[slot] = false
	cl.mu.Unlock()
}

// pick chooses the slot's next server (see pick) and claims it, at once, so that two
// slots picking together do not take the same one.
func (cl *claims) pick(slot int, members []member, last int, rnd *rand.Rand) int {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	i := pick(members, last, rnd, func(m *member) bool {
		for j, has := range cl.has {
			if has && j != slot && cl.eps[j] == m.Endpoint {
				return true
			}
		}
		return false
	})
	cl.eps[slot], cl.has[slot] = members[i].Endpoint, true
	return i
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
	cfg.Slots = max(cfg.Slots, 1)
	c := &Cluster{cfg: cfg}
	c.claims.eps, c.claims.has = make([]conn.Endpoint, cfg.Slots), make([]bool, cfg.Slots)
	for i := range cfg.Slots {
		c.slots = append(c.slots, make(chan []Server, 1))
		if i == 0 {
			c.rands = append(c.rands, cfg.Rand) // the caller's, so that a test can fix it
		} else {
			c.rands = append(c.rands, rand.New(rand.NewPCG(cfg.Rand.Uint64(), cfg.Rand.Uint64())))
		}
	}
	return c
}

// SetServers replaces the server list. An attempt still dialing is abandoned; a live
// connection to a server still listed is kept until it fails, one to a server no longer
// listed is closed gracefully. The next choice is made from the new list, at once. It
// never blocks.
func (c *Cluster) SetServers(servers []Server) {
	for _, updates := range c.slots {
		for sent := false; !sent; {
			select {
			case updates <- servers:
				sent = true
			default:
				select {
				case <-updates: // drop the older list that the slot has not taken yet
				default:
				}
			}
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
	moved    bool // its endpoint came from a Server Reference (0x9D): TLS checks the new host
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
// connection ends the round. With FollowRedirects, a server that answers with a Server
// Reference (CONNACK or DISCONNECT 0x9C, 0x9D) sends the next attempt there, at once. It
// returns when ctx ends, after closing the live connection and waiting for its goroutines.
func (c *Cluster) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for i := range c.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &run{Cluster: c, slot: i, updates: c.slots[i], rnd: c.rands[i], last: -1}
			r.loop(ctx)
		}()
	}
	wg.Wait()
	return nil
}

// loop is one slot's actor.
func (r *run) loop(ctx context.Context) {
	c := r.Cluster
	defer c.claims.drop(r.slot)
	for {
		if len(r.members) == 0 {
			select {
			case list := <-r.updates:
				r.replace(list)
				continue
			case <-ctx.Done():
				return
			}
		}
		// The server to try: where a redirect points, else the round's next pick.
		var m *member // nil for a redirect's target that is not on the list
		var ep conn.Endpoint
		redirected := r.next != nil
		if redirected {
			ep, m, r.next = r.next.ep, r.next.m, nil
		} else {
			if !untried(r.members) {
				r.rounds++
				newRound(r.members)
			}
			if !anyTried(r.members) && !r.skipDelay {
				if list, ok := r.sleep(ctx, c.cfg.Policy.Delay(r.rounds, r.rnd)); !ok {
					return
				} else if list != nil {
					r.replace(list)
					continue
				}
			}
			r.skipDelay = false
			i := c.claims.pick(r.slot, r.members, r.last, r.rnd)
			r.last = i
			r.members[i].tried = true
			m = &r.members[i]
			ep = m.Endpoint // m moves if the list is replaced while connected
		}
		c.claims.set(r.slot, ep)
		cn, err, list := r.dial(ctx, ep, redirected || m != nil && m.moved)
		switch {
		case list != nil:
			c.claims.drop(r.slot)
			r.replace(list)
			continue
		case ctx.Err() != nil:
			return
		case err != nil:
			c.claims.drop(r.slot)
			if m != nil {
				c.failed(r.members, m, err)
			} else {
				c.cfg.Logger.Warn("mdclient: connect failed", "server", ep.String(), "reason", err)
				c.cfg.Notify(false, ep.String(), err)
			}
			r.follow(err, ep, m)
			continue
		}
		ok := r.connected(ctx, cn, ep, m, redirected)
		c.claims.drop(r.slot)
		if !ok {
			return
		}
	}
}

// run is the state of one slot's loop, owned by its goroutine.
type run struct {
	*Cluster
	slot      int
	updates   <-chan []Server
	rnd       *rand.Rand
	members   []member
	rounds    int         // consecutive rounds in which every server failed
	last      int         // index of the server used or tried last
	next      *redirectTo // where the next attempt goes, at once; nil: the next pick
	hops      int         // redirects followed since the last connection that was not one
	skipDelay bool        // the next round starts without the policy's delay
}

// redirectTo is a server a Server Reference named.
type redirectTo struct {
	ep conn.Endpoint
	m  *member // the list's entry it replaced (0x9D), or nil
}

func (r *run) replace(list []Server) {
	r.members = make([]member, len(list))
	for i, s := range list {
		r.members[i].Server = s
	}
	r.last, r.rounds, r.next, r.hops = -1, 0, nil, 0
	r.skipDelay = true // a new list is tried at once, whatever the quick delay
}

// sleep waits d, or until a new list comes (returned) or ctx ends (false).
func (r *run) sleep(ctx context.Context, d time.Duration) ([]Server, bool) {
	if d <= 0 {
		return nil, true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil, true
	case list := <-r.updates:
		return list, true
	case <-ctx.Done():
		return nil, false
	}
}

// connected hands cn to the engine and waits for it to end; false means Run must return.
// A connection that a redirect reached does not end the row of redirects: servers that
// send the client to each other are followed maxRedirects times, then paced by the rounds.
func (r *run) connected(ctx context.Context, cn *conn.Conn, ep conn.Endpoint, m *member, redirected bool) bool {
	c := r.Cluster
	connectedAt := time.Now()
	if m != nil {
		m.failures, m.lost = 0, false
	}
	if !redirected {
		r.hops = 0
	}
	for j := range r.members {
		r.members[j].refused = false
	}
	name := ep.String()
	c.cfg.Logger.Info("mdclient: connected", "server", name, "receive_maximum", cn.Limits().ReceiveMaximum)
	taken := make(chan struct{})
	select {
	case c.cfg.Events <- conn.Event{Conn: cn, Up: true, Lane: r.slot, Taken: taken}:
	case <-c.cfg.Quit:
		cn.Close(nil)
		return false
	}
	cn.Start(c.cfg.Events, c.cfg.Quit)
	// Announced once the engine uses it: whoever reads the Up event and then asks for
	// Stats finds the connection counted.
	select {
	case <-taken:
		c.cfg.Notify(true, name, nil)
	case <-c.cfg.Quit:
	}
	for done := false; !done; {
		select {
		case <-cn.Done():
			done = true
		case list := <-r.updates:
			r.replace(list)
			if !contains(list, ep) {
				// The server in use is no longer listed: leave it, gracefully; what it
				// has not acknowledged is resent on the next connection.
				c.cfg.Logger.Info("mdclient: server removed from the list, moving", "server", name)
				cn.Close(errRemoved)
			}
		case <-ctx.Done():
			cn.Close(nil)
			<-cn.Done()
			return false
		}
	}
	if errors.Is(cn.Err(), conn.ErrClosed) {
		// The engine closed it: the client is closing, and this is no server going down.
		<-ctx.Done()
		return false
	}
	if j := index(r.members, ep); j >= 0 {
		r.last = j // avoid it next time if it is still listed
		r.members[j].lost = true
		r.members[j].tried = true
	}
	if time.Since(connectedAt) >= stableAfter {
		r.rounds, r.hops = 0, 0
		newRound(r.members)
		// A server that says it is going away is left at once, without the quick delay.
		var sd *conn.ServerDisconnectError
		r.skipDelay = errors.As(cn.Err(), &sd)
	}
	c.cfg.Logger.Warn("mdclient: connection lost", "server", name, "reason", cn.Err())
	c.cfg.Notify(false, name, cn.Err())
	if j := index(r.members, ep); j >= 0 {
		m = &r.members[j]
	} else {
		m = nil
	}
	r.follow(cn.Err(), ep, m)
	return true
}

// maxRedirects bounds the redirects followed in a row.
const maxRedirects = 3

// follow makes the next attempt go where err's Server Reference points, if it has one
// and redirects are followed; with 0x9D (server moved) the reference also replaces m's
// entry of the list.
func (r *run) follow(err error, from conn.Endpoint, m *member) {
	if !r.cfg.FollowRedirects {
		return
	}
	var ref string
	var moved, ok bool
	var refused *conn.RefusedError
	var sd *conn.ServerDisconnectError
	switch {
	case errors.As(err, &refused):
		ref, moved, ok = refused.Redirect()
	case errors.As(err, &sd):
		ref, moved, ok = sd.Redirect()
	}
	if !ok {
		return
	}
	if r.hops >= maxRedirects {
		r.cfg.Logger.Warn("mdclient: too many redirects in a row, not following", "server", from.String(), "reference", conn.QuoteServer(ref))
		return
	}
	to, perr := parseReference(ref, from)
	if perr != nil {
		r.cfg.Logger.Warn("mdclient: cannot follow the server reference", "server", from.String(), "reason", perr)
		return
	}
	r.hops++
	r.next = &redirectTo{ep: to}
	if moved && m != nil {
		// Another server from now on: its failures count afresh, and are reported.
		m.Endpoint, m.moved, m.failures = to, true, 0
		r.next.m = m
	}
	r.cfg.Logger.Info("mdclient: following the server reference", "from", from.String(), "to", to.String(), "moved", moved)
}

// parseReference reads a Server Reference: a space-separated list of servers, of which
// the first that parses is taken. An entry with a scheme is a server entry of its own;
// a bare host:port keeps the transport (and WebSocket path) of the server it came from.
func parseReference(ref string, from conn.Endpoint) (conn.Endpoint, error) {
	var firstErr error
	for _, f := range strings.Fields(ref) {
		if !strings.Contains(f, "://") {
			switch from.Transport {
			case conn.WS, conn.WSS:
				u, err := url.Parse(from.URL)
				if err != nil {
					return conn.Endpoint{}, err
				}
				f = u.Scheme + "://" + f + u.Path
			default:
				f = from.Transport.String() + "://" + f
			}
		}
		s, err := Parse(f)
		if err == nil {
			return s.Endpoint, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("%w: an empty server reference", ErrInvalidServer)
	}
	return conn.Endpoint{}, firstErr
}

// dial runs one attempt, abandoning it when a new server list arrives (returned, with
// no connection) or ctx ends. A redirected attempt verifies TLS against its own host,
// whatever server name the configuration gives.
func (r *run) dial(ctx context.Context, ep conn.Endpoint, redirected bool) (*conn.Conn, error, []Server) {
	c := r.Cluster
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
		if len(c.slots) > 1 && cfg.ClientID != "" {
			// A broker lets one connection per client id live: each slot has its own.
			cfg.ClientID += "-" + strconv.Itoa(r.slot)
		}
		if redirected && cfg.TLS != nil && cfg.TLS.ServerName != "" {
			cfg.TLS = cfg.TLS.Clone()
			cfg.TLS.ServerName = ""
		}
		cn, err := c.cfg.Dial(dctx, ep, cfg)
		done <- result{cn, err}
	}()
	// An abandoned attempt is not waited for: a dialer or token function that ignores its
	// context must not hold up a new server list, the next attempt or Close. A goroutine
	// closes what it yields, if it ever returns.
	abandon := func() {
		cancel()
		go func() {
			if r := <-done; r.cn != nil {
				r.cn.Close(nil)
			}
		}()
	}
	var timeout <-chan time.Time
	if d := c.cfg.AttemptTimeout; d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-done:
		return r.cn, r.err, nil
	case list := <-r.updates:
		abandon()
		return nil, nil, list
	case <-timeout:
		abandon()
		return nil, fmt.Errorf("the attempt did not end within %v (a dialer or token function that ignores its context?)", c.cfg.AttemptTimeout), nil
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
// left, so a failover always moves on, and so are the servers avoid names (those other
// connection slots hold) while another weighted one is left: a slot shares a weighted
// server rather than take a standby. It returns last when nothing else is left.
func pick(members []member, last int, rnd *rand.Rand, avoid func(*member) bool) int {
	for _, standby := range [2]bool{false, true} {
		for _, spread := range [2]bool{true, false} {
			candidate := func(i int) bool {
				m := &members[i]
				return !m.tried && (m.Weight == 0) == standby && (i != last || len(members) == 1) &&
					(!spread || avoid == nil || !avoid(m))
			}
			if i := pickAmong(members, candidate, rnd); i >= 0 {
				return i
			}
		}
	}
	if last >= 0 && last < len(members) {
		return last
	}
	return 0
}

// pickAmong chooses among the candidates with the lowest penalty, at random by weight.
func pickAmong(members []member, candidate func(int) bool, rnd *rand.Rand) int {
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
		return -1
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
	return -1
}
