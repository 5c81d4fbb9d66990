package engine

import (
	"context"
	"time"

	"github.com/mdclient/mdclient/codec"
)

// Fact is what the engine knows became of a request. The root package maps facts to
// statuses and errors, in one table; the engine decides nothing about how they read.
type Fact uint8

// The facts. Outcome.Written tells, for each, whether the message's bytes were ever
// handed to a connection.
const (
	Acked     Fact = iota // a PUBACK came: Outcome.Reason and ReasonString
	Refused               // every server refused the credentials (Cause: the CONNACK's *conn.RefusedError)
	Expired               // its context or the publish timeout ended first (Cause: the context's cause, if any)
	Closed                // the client closed before an outcome was known
	TooLarge              // larger than the server's Maximum Packet Size (Cause says by how much)
	Invalid               // the server said it cannot take it: Retain Available 0, Maximum QoS 0 (Cause)
	Lost                  // at-most-once, and its connection was lost before the ack (Cause: the connection's error)
	Poisoned              // its connection was lost PoisonAfter times in a row while it was in flight (Cause: the last error)
	NoServers             // no server list was set: decided by the client, before a request reaches the engine
)

var factNames = [...]string{"Acked", "Refused", "Expired", "Closed", "TooLarge", "Invalid", "Lost", "Poisoned", "NoServers"}

func (f Fact) String() string {
	if int(f) < len(factNames) {
		return factNames[f]
	}
	return "Fact(?)"
}

// PoisonAfter is how many lost connections in a row a message may be in flight on before
// it is given up: a server that drops the connection over one message would otherwise
// have it resent first, and dropped again, for ever.
const PoisonAfter = 3

// Outcome is a request's fact and what goes with it. The engine writes it once, just
// before handing the request to Config.Complete.
type Outcome struct {
	Fact         Fact
	Written      bool   // its bytes were handed to a connection at least once
	Resent       bool   // it was in flight on a connection lost before its ack: that send may have been published
	Reason       byte   // the PUBACK reason code (Acked)
	ReasonString string // the PUBACK reason string, if any (Acked)
	Server       string // the server it was last written to; "" if never
	Cause        error  // what ended it, for facts other than Acked
	NoConnection bool   // Expired while no connection was up
}

// Request is one message to publish. The submitter fills the exported fields other than
// Outcome and does not touch the request again until Config.Complete hands it back.
type Request struct {
	// Packet is the PUBLISH to send: topic, payload, retain and properties. The engine
	// sets QoS, packet identifier, DUP and topic alias on its own copy's fields.
	Packet     codec.Publish
	AtMostOnce bool            // never sent twice; a lost connection before the ack is Lost
	Ctx        context.Context // bounds the request; never bounds a connection
	Owner      any             // the submitter's, untouched by the engine
	Outcome    Outcome         // written by the engine at completion

	// Owned by the engine's goroutine from Submit on.
	state    state
	id       uint16    // packet identifier while batched or sent
	deaths   int       // connections lost in a row while it was in flight on them
	lostAt   uint64    // Engine.losses after its last loss (see lane.heard)
	seq      uint64    // admission order, to resend in order
	deadline time.Time // the context's deadline, or admission plus the publish timeout
	dlPos    uint64    // position in the deadlines queue; noDeadline when not there
	stopCtx  func() bool

	lane    *lane // the lane whose queue, batch or table holds it
	home    int   // its subject's home lane (route.go)
	awaited bool  // its home lane waits for its outcome (route.go)

	// Where the engine still holds the request, so that it is released (Config.Release)
	// only once it holds it nowhere: after its outcome was delivered, out of the queue and
	// the batch, and with no context callback still on its way.
	inRing, inBatch, cancelPending, delivered bool
}

// state is where a request is in its life. Each transition happens on the engine's
// goroutine, in one place (see docs/DESIGN.md, "The life of a request"):
//
//	queued  ─encode─▶ batched ─flush─▶ sent ─PUBACK─▶ done
//	  ▲                  │               │
//	  └──── connection lost (resend) ────┘
//
// and from any of the first three to done when its context ends, the client closes, the
// credentials are refused or it cannot be sent. Written is set by flush alone: a request
// taken out of a batch before the hand-over was never written.
type state uint8

const (
	queued   state = iota // waiting for a packet identifier and a connection
	batched               // encoded into the batch not yet handed to the connection
	sent                  // handed to the connection, not yet acknowledged
	done                  // has its outcome
	released              // handed back with Config.Release: not the engine's any more
)
