// Package engine is the heart of the client: one actor that admits publish requests
// (backpressure, Close), owns the in-flight correlation table (packet identifiers, the
// server's Receive Maximum window, deadlines) and gives every request exactly one outcome.
package engine

import (
	"context"
	"time"
)

// Outcome is what became of a request.
type Outcome uint8

// The outcomes.
const (
	OK           Outcome = iota // PUBACK below 0x80 other than 0x10
	NoSubscriber                // PUBACK 0x10
	Denied                      // PUBACK 0x87, or every server refused the credentials
	Rejected                    // PUBACK with any other failure code
	Timeout                     // the context ended after the message was written
	Expired                     // the context ended before the message could be written
	Closed                      // the client closed before an outcome was known
	TooLarge                    // larger than the server's Maximum Packet Size
	Lost                        // at-most-once message on a connection lost before its ack
)

var outcomeNames = [...]string{"OK", "NoSubscriber", "Denied", "Rejected", "Timeout", "Expired", "Closed", "TooLarge", "Lost"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "Outcome(?)"
}

// Completer receives a request's one outcome. Complete is called once per request, on the
// engine's goroutine or on the submitting caller's, and must not block.
type Completer interface {
	Complete(r *Request)
}

// Request is one message to publish. The submitter fills the fields above the line and
// does not touch the request again until Complete; the engine then fills the outcome.
type Request struct {
	Topic           string
	Payload         []byte
	ResponseTopic   string
	CorrelationData []byte
	Retain          bool
	AtMostOnce      bool            // never sent twice; a lost connection before the ack is Lost
	Ctx             context.Context // bounds the request; never bounds a connection
	Deadline        time.Time       // the default deadline, used when Ctx has none
	Owner           Completer

	// The outcome.
	Outcome      Outcome
	Reason       byte   // the PUBACK reason code, when a PUBACK came
	ReasonString string // the PUBACK reason string, if any
	Server       string // the server the message was last written to
	Cause        error  // what ended it, when not a PUBACK: a context's cause, a connection error
	NoConnection bool   // Expired while no server was connected

	// Owned by the engine's goroutine from Submit on.
	state   state
	written bool   // written to a connection at least once
	id      uint16 // packet identifier while in flight
	seq     uint64 // admission order, to resend in order
	dlPos   uint64 // position in the deadlines queue; noDeadline when not there
	stopCtx func() bool
}

type state uint8

const (
	queued state = iota
	inFlight
	done
)
