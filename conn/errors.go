package conn

import (
	"errors"
	"fmt"
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
	Code   byte   // the CONNACK reason code, 0x80 or more
	Reason string // the server's reason string, if any
}

func (e *RefusedError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("connection refused: reason code 0x%02x (%s)", e.Code, e.Reason)
	}
	return fmt.Sprintf("connection refused: reason code 0x%02x", e.Code)
}

// NotAuthorized reports whether the server refused the credentials (0x86 bad user name or
// password, 0x87 not authorized), the two codes brokers use for a wrong token.
func (e *RefusedError) NotAuthorized() bool { return e.Code == 0x86 || e.Code == 0x87 }

// ServerDisconnectError is a DISCONNECT sent by the server.
type ServerDisconnectError struct {
	Code   byte   // the DISCONNECT reason code
	Reason string // the server's reason string, if any
}

func (e *ServerDisconnectError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("server sent DISCONNECT: reason code 0x%02x (%s)", e.Code, e.Reason)
	}
	return fmt.Sprintf("server sent DISCONNECT: reason code 0x%02x", e.Code)
}
