package mdclient

import (
	"errors"

	"github.com/mdclient/mdclient/cluster"
	"github.com/mdclient/mdclient/conn"
)

// The sentinel errors. A PublishResult's Err, Publish's error and SetServers' error wrap
// one or more of them; test with errors.Is. Every result wraps the sentinel of its
// status (ErrFailed, ErrDenied, ErrNoSubscriber or ErrTimeout), and what made it so
// besides.
var (
	// ErrDenied: the server refused the publish (PUBACK 0x87, or a code named with
	// WithDeniedReasonCodes, to a message never sent before: see ErrTimeout), or every
	// server refused the entitlement token at CONNECT (then the error also wraps a
	// *RefusedError). Status NotifyPublishDenied.
	ErrDenied = errors.New("mdclient: publish denied")
	// ErrNoSubscriber: the server had no subscriber for the subject (PUBACK 0x10).
	// Status NotifyPublishNoSubscriber.
	ErrNoSubscriber = errors.New("mdclient: no subscriber")
	// ErrTimeout: with status NotifyPublishTimeout, the message was written and no
	// acknowledgement came — it may or may not have been published; the error also wraps
	// why: the context's cause, ErrClosed, or the lost connection's error; or, sent again
	// after its connection was lost, the last send was refused (PUBACK code ≥ 0x80, named
	// in the text only) while an earlier send may have been published. With
	// NotifyPublishFailed, the request's context (or the publish timeout) ended before it
	// was written: it was not published.
	ErrTimeout = errors.New("mdclient: publish timed out")
	// ErrFailed: the message was not published; the error also says why (ErrTimeout,
	// ErrClosed, ErrNoServers, ErrInvalidMessage, ErrMessageTooLarge, or the server's
	// reason code: a PUBACK failure code to a message never sent before). Status
	// NotifyPublishFailed.
	ErrFailed = errors.New("mdclient: publish failed")
	// ErrClosed: Close came before the outcome was known. With NotifyPublishFailed the
	// message was never written; with NotifyPublishTimeout it was, unacknowledged.
	ErrClosed = conn.ErrClosed
	// ErrNoServers: no server list was set, or no server was connected when the request
	// expired unwritten.
	ErrNoServers = errors.New("mdclient: no servers available")
	// ErrInvalidMessage: the message can never be sent as it is (see Message); nothing
	// was written.
	ErrInvalidMessage = errors.New("mdclient: invalid message")
	// ErrMessageTooLarge: the message exceeds the server's Maximum Packet Size (or MQTT's
	// limit); nothing was written.
	ErrMessageTooLarge = errors.New("mdclient: message too large")
	// ErrHookPanicked: the Hook (WithHook) panicked on the request; it was not sent.
	ErrHookPanicked = errors.New("mdclient: hook panicked")
	// ErrInvalidServer: an entry given to SetServers does not parse; the error names it.
	ErrInvalidServer = cluster.ErrInvalidServer
)

// Why a connection ended, in the Err of a NotifyServerDown Event and wrapped by the Err of
// results that the lost connection decided (errors.Is and errors.As work on both).
var (
	// ErrKeepAlive: nothing came from the server for 1.5 keep-alive intervals.
	ErrKeepAlive = conn.ErrKeepAlive
	// ErrProtocol: the server sent something MQTT 5 does not allow (a malformed packet,
	// an acknowledgement of nothing in flight); the client dropped the connection.
	ErrProtocol = conn.ErrProtocol
)

// RefusedError is a CONNACK that refused the connection, with its reason code (0x86 and
// 0x87 refuse the credentials) and reason string. A NotifyServerDown Event's Err, and the
// Err of publishes denied because every server refused the token, wrap one.
type RefusedError = conn.RefusedError

// ServerDisconnectError is a DISCONNECT the server sent, with its reason code (0x8B:
// server shutting down, …) and reason string, in a NotifyServerDown Event's Err.
type ServerDisconnectError = conn.ServerDisconnectError
