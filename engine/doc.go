// Package engine is the heart of the client: one actor that admits publish requests
// (backpressure, Close), owns the in-flight correlation table (packet identifiers, the
// server's Receive Maximum window, deadlines), encodes batches for the connection in use
// and gives every request exactly one Outcome: a fact, which the root package turns into
// a status.
//
// It is part of mdclient's machinery, importable so that the other actors and their
// tests can use it; its API has no compatibility promise.
package engine
