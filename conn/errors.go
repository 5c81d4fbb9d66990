package conn

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

var (
	// ErrClosed ends a connection the client itself closed (mdclient.ErrClosed).
	ErrClosed = errors.New("mdclient: client closed")
	// ErrKeepAlive ends a connection on which the server fell silent for 1.5 keep-alive
	// intervals.
	ErrKeepAlive = errors.New("mdclient: keep-alive: no data from the server")
	// ErrProtocol is wrapped by the reason of a connection dropped for what the server
	// sent: a malformed packet, one a client never receives, an acknowledgement of
	// nothing in flight.
	ErrProtocol = errors.New("mdclient: protocol violation by the server")
)

// RefusedError is a CONNACK with a failure reason code: the server refused the
// connection.
type RefusedError struct {
	Code            byte   // the CONNACK reason code, 0x80 or more
	Reason          string // the server's reason string, if any
	ServerReference string // with 0x9C (use another server) or 0x9D (server moved): where to go
}

func (e *RefusedError) Error() string {
	return describe("connection refused", e.Code, e.Reason, e.ServerReference)
}

// Redirect returns the server the CONNACK sends the client to: its Server Reference, with
// reason 0x9C (use another server) or 0x9D (server moved, for good).
func (e *RefusedError) Redirect() (ref string, moved, ok bool) {
	return redirect(e.Code, e.ServerReference)
}

func redirect(code byte, ref string) (string, bool, bool) {
	if (code != 0x9C && code != 0x9D) || ref == "" {
		return "", false, false
	}
	return ref, code == 0x9D, true
}

func describe(what string, code byte, reason, ref string) string {
	s := fmt.Sprintf("%s: reason code 0x%02x", what, code)
	if reason != "" {
		s += " (" + reason + ")"
	}
	if ref != "" {
		s += ", server reference " + QuoteServer(ref) // a server's words: no user info
	}
	return s
}

// NotAuthorized reports whether the server refused the credentials (0x86 bad user name or
// password, 0x87 not authorized), the two codes brokers use for a wrong token.
func (e *RefusedError) NotAuthorized() bool { return e.Code == 0x86 || e.Code == 0x87 }

// ServerDisconnectError is a DISCONNECT sent by the server.
type ServerDisconnectError struct {
	Code            byte   // the DISCONNECT reason code
	Reason          string // the server's reason string, if any
	ServerReference string // with 0x9C (use another server) or 0x9D (server moved): where to go
}

func (e *ServerDisconnectError) Error() string {
	return describe("server sent DISCONNECT", e.Code, e.Reason, e.ServerReference)
}

// Redirect returns the server the DISCONNECT sends the client to, as RefusedError's does.
func (e *ServerDisconnectError) Redirect() (ref string, moved, ok bool) {
	return redirect(e.Code, e.ServerReference)
}

// QuoteServer quotes a server entry or address for an error or a log: user info (a password, perhaps) replaced by
// "…", at most 64 bytes. The user info is what comes before the last '@' of the address's
// authority, as net/url reads it (a password may hold '@').
func QuoteServer(entry string) string {
	start := 0
	if i := strings.Index(entry, "://"); i >= 0 {
		start = i + 3
	} else if i := strings.LastIndexAny(entry, " \t"); i >= 0 {
		start = i + 1 // after a weight
	}
	authority := entry[start:]
	if i := strings.IndexByte(authority, '/'); i >= 0 {
		authority = authority[:i]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		entry = entry[:start] + "…" + entry[start+at:]
	}
	const max = 64
	if len(entry) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(entry[cut]) {
			cut--
		}
		return strconv.Quote(entry[:cut]) + "…"
	}
	return strconv.Quote(entry)
}
