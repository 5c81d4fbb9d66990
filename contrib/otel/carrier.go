package mdotel

import "github.com/mdclient/mdclient"

// carrier is a propagation.TextMapCarrier over a message's user properties. It reads
// them in place and copies them before its first Set, so that the caller's slice is
// never written: owned tells that props is a new slice.
type carrier struct {
	props []mdclient.UserProperty
	owned bool
}

// Get returns the value of the first property named key, or "".
func (c *carrier) Get(key string) string {
	for _, p := range c.props {
		if p.Key == key {
			return p.Value
		}
	}
	return ""
}

// Set gives the first property named key the value, or appends one; MQTT 5 allows a
// key to repeat, and a second traceparent would leave a consumer guessing.
func (c *carrier) Set(key, value string) {
	if !c.owned {
		props := make([]mdclient.UserProperty, len(c.props), len(c.props)+2) // traceparent, tracestate
		copy(props, c.props)
		c.props, c.owned = props, true
	}
	for i := range c.props {
		if c.props[i].Key == key {
			c.props[i].Value = value
			return
		}
	}
	c.props = append(c.props, mdclient.UserProperty{Key: key, Value: value})
}

// Keys returns the properties' keys, in order, once each.
func (c *carrier) Keys() []string {
	keys := make([]string, 0, len(c.props))
	for _, p := range c.props {
		dup := false
		for _, k := range keys {
			if k == p.Key {
				dup = true
				break
			}
		}
		if !dup {
			keys = append(keys, p.Key)
		}
	}
	return keys
}
