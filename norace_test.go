//go:build !race

package mdclient_test

const raceEnabled = false
