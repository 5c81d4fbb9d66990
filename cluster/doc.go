// Package cluster is the client's membership actor: it holds the server list, picks a
// server by weight, applies the reconnect policy, dials, and reports servers going up and
// down.
//
// It is part of mdclient's machinery, importable so that the other actors and their
// tests can use it; its API has no compatibility promise.
package cluster
