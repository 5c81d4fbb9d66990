// Package conn is the client's connection actor: one per server connection. It opens
// the transport (WebSocket, secure WebSocket, TCP, TLS, or any net.Conn handed to
// [Open]), performs the MQTT 5 CONNECT/CONNACK exchange, keeps the connection alive,
// writes the byte batches the engine hands it and reads acknowledgements back. It knows
// nothing of requests, only of frames.
//
// It is part of mdclient's machinery, importable so that the other actors and their
// tests can use it; its API has no compatibility promise. Users need only the root
// package, which re-exports the errors below.
package conn
