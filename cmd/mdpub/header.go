package main

import (
	"encoding/binary"
	"errors"
	"time"
)

// The payload header (--payload-header) starts the content of every message, so that any
// subscriber can check order and gaps and measure latency. Integers are big-endian:
//
//	bytes  0–7   sequence number: the message's number within its client, from 1 (%n)
//	bytes  8–15  send time, Unix nanoseconds (signed): when the message was due (--rate)
//	             or handed to the client (no --rate); mdpub's own latency counts from it
//	bytes 16–19  client number, from 1 (%i)
//	bytes 20–23  "MDP1", which marks the header and its version
//
// The rest of the content, up to --size bytes, is filler.
const (
	headerLen   = 24
	headerMagic = "MDP1"
)

// header is a decoded payload header.
type header struct {
	seq    uint64
	sent   time.Time
	client uint32
}

// putHeader writes the header at the start of b, which has room for it.
func putHeader(b []byte, seq uint64, sentUnixNano int64, client uint32) {
	_ = b[headerLen-1]
	binary.BigEndian.PutUint64(b[0:8], seq)
	binary.BigEndian.PutUint64(b[8:16], uint64(sentUnixNano))
	binary.BigEndian.PutUint32(b[16:20], client)
	copy(b[20:24], headerMagic)
}

// errNoHeader is decodeHeader's answer for content that does not start with a header.
var errNoHeader = errors.New("no mdpub payload header")

// decodeHeader reads the header at the start of content.
func decodeHeader(content []byte) (header, error) {
	if len(content) < headerLen || string(content[20:24]) != headerMagic {
		return header{}, errNoHeader
	}
	return header{
		seq:    binary.BigEndian.Uint64(content[0:8]),
		sent:   time.Unix(0, int64(binary.BigEndian.Uint64(content[8:16]))),
		client: binary.BigEndian.Uint32(content[16:20]),
	}, nil
}
