package codec

import "fmt"

// Property identifiers from MQTT 5.0 section 2.2.2.2.
const (
	propPayloadFormat        byte = 0x01
	propMessageExpiry        byte = 0x02
	propContentType          byte = 0x03
	propResponseTopic        byte = 0x08
	propCorrelationData      byte = 0x09
	propSubscriptionID       byte = 0x0B
	propSessionExpiry        byte = 0x11
	propAssignedClientID     byte = 0x12
	propServerKeepAlive      byte = 0x13
	propAuthMethod           byte = 0x15
	propAuthData             byte = 0x16
	propRequestProblemInfo   byte = 0x17
	propWillDelay            byte = 0x18
	propRequestResponseInfo  byte = 0x19
	propResponseInfo         byte = 0x1A
	propServerReference      byte = 0x1C
	propReasonString         byte = 0x1F
	propReceiveMaximum       byte = 0x21
	propTopicAliasMaximum    byte = 0x22
	propTopicAlias           byte = 0x23
	propMaximumQoS           byte = 0x24
	propRetainAvailable      byte = 0x25
	propUserProperty         byte = 0x26
	propMaximumPacketSize    byte = 0x27
	propWildcardSubAvailable byte = 0x28
	propSubIDAvailable       byte = 0x29
	propSharedSubAvailable   byte = 0x2A
	maxPropID                     = 0x2A
)

// propWhere is a set of places a property may appear.
type propWhere uint8

const (
	inConnect propWhere = 1 << iota
	inConnack
	inPublish
	inPuback
	inDisconnect
	inWill // the Will Properties inside a CONNECT payload
)

// propType is the wire type of a property value.
type propType uint8

const (
	ptNone propType = iota // not a property identifier
	ptByte
	ptU16
	ptU32
	ptVarint
	ptString
	ptBinary
	ptPair // UTF-8 String Pair (user property)
)

// propCheck is a range rule on a numeric value; breaking it is a protocol
// error the decoder reports as malformed.
type propCheck uint8

const (
	checkNone    propCheck = iota
	checkBool              // must be 0 or 1
	checkNonZero           // 0 is not allowed
)

type propSpec struct {
	typ    propType
	where  propWhere
	check  propCheck
	repeat bool // may appear more than once
}

// propSpecs describes every property MQTT 5.0 defines, limited to the
// packets this codec decodes.
var propSpecs = [maxPropID + 1]propSpec{
	propPayloadFormat:        {typ: ptByte, where: inPublish | inWill, check: checkBool},
	propMessageExpiry:        {typ: ptU32, where: inPublish | inWill},
	propContentType:          {typ: ptString, where: inPublish | inWill},
	propResponseTopic:        {typ: ptString, where: inPublish | inWill},
	propCorrelationData:      {typ: ptBinary, where: inPublish | inWill},
	propSubscriptionID:       {typ: ptVarint, where: inPublish, check: checkNonZero, repeat: true},
	propSessionExpiry:        {typ: ptU32, where: inConnect | inConnack | inDisconnect},
	propAssignedClientID:     {typ: ptString, where: inConnack},
	propServerKeepAlive:      {typ: ptU16, where: inConnack},
	propAuthMethod:           {typ: ptString, where: inConnect | inConnack},
	propAuthData:             {typ: ptBinary, where: inConnect | inConnack},
	propRequestProblemInfo:   {typ: ptByte, where: inConnect, check: checkBool},
	propWillDelay:            {typ: ptU32, where: inWill},
	propRequestResponseInfo:  {typ: ptByte, where: inConnect, check: checkBool},
	propResponseInfo:         {typ: ptString, where: inConnack},
	propServerReference:      {typ: ptString, where: inConnack | inDisconnect},
	propReasonString:         {typ: ptString, where: inConnack | inPuback | inDisconnect},
	propReceiveMaximum:       {typ: ptU16, where: inConnect | inConnack, check: checkNonZero},
	propTopicAliasMaximum:    {typ: ptU16, where: inConnect | inConnack},
	propTopicAlias:           {typ: ptU16, where: inPublish, check: checkNonZero},
	propMaximumQoS:           {typ: ptByte, where: inConnack, check: checkBool},
	propRetainAvailable:      {typ: ptByte, where: inConnack, check: checkBool},
	propUserProperty:         {typ: ptPair, where: inConnect | inConnack | inPublish | inPuback | inDisconnect | inWill, repeat: true},
	propMaximumPacketSize:    {typ: ptU32, where: inConnect | inConnack, check: checkNonZero},
	propWildcardSubAvailable: {typ: ptByte, where: inConnack, check: checkBool},
	propSubIDAvailable:       {typ: ptByte, where: inConnack, check: checkBool},
	propSharedSubAvailable:   {typ: ptByte, where: inConnack, check: checkBool},
}

// property is one decoded property. Numeric values are in num; String and
// Binary values in data (for a user property, data is the key and value the value).
type property struct {
	id    byte
	num   uint32
	data  []byte
	value []byte
}

// propIter walks a property block, validating each property as it goes:
// known identifier, allowed in this packet, not repeated unless the spec
// allows it, value well formed and within range, and the block exactly
// consumed.
type propIter struct {
	r     reader
	where propWhere
	seen  uint64 // bit i: property i already seen (identifiers are < 64)
}

// readProps reads a Property Length and carves that many bytes off r.
func readProps(r *reader, where propWhere) (propIter, error) {
	n, err := r.varint()
	if err != nil {
		return propIter{}, err
	}
	block, err := r.take(n)
	if err != nil {
		return propIter{}, err
	}
	return propIter{r: reader{b: block}, where: where}, nil
}

// has reports whether property id has been seen so far.
func (it *propIter) has(id byte) bool { return it.seen&(1<<id) != 0 }

// next returns the next property; ok is false at the end of the block.
func (it *propIter) next() (p property, ok bool, err error) {
	if it.r.empty() {
		return property{}, false, nil
	}
	// The identifier is a Variable Byte Integer, but every defined one is
	// below 0x80, so any byte with the high bit set is unknown or padded.
	id, _ := it.r.u8()
	if int(id) >= len(propSpecs) || propSpecs[id].typ == ptNone {
		return property{}, false, fmt.Errorf("%w: unknown property 0x%02X", ErrMalformed, id)
	}
	spec := propSpecs[id]
	if spec.where&it.where == 0 {
		return property{}, false, fmt.Errorf("%w: property 0x%02X not allowed here", ErrMalformed, id)
	}
	if !spec.repeat && it.has(id) {
		return property{}, false, fmt.Errorf("%w: property 0x%02X repeated", ErrMalformed, id)
	}
	it.seen |= 1 << id
	p.id = id
	switch spec.typ {
	case ptByte:
		var v byte
		v, err = it.r.u8()
		p.num = uint32(v)
	case ptU16:
		var v uint16
		v, err = it.r.u16()
		p.num = uint32(v)
	case ptU32:
		p.num, err = it.r.u32()
	case ptVarint:
		var v int
		v, err = it.r.varint()
		p.num = uint32(v)
	case ptString:
		p.data, err = it.r.str()
	case ptBinary:
		p.data, err = it.r.binary()
	case ptPair:
		if p.data, err = it.r.str(); err == nil {
			p.value, err = it.r.str()
		}
	}
	if err != nil {
		return property{}, false, err
	}
	switch spec.check {
	case checkBool:
		if p.num > 1 {
			return property{}, false, fmt.Errorf("%w: property 0x%02X must be 0 or 1", ErrMalformed, id)
		}
	case checkNonZero:
		if p.num == 0 {
			return property{}, false, fmt.Errorf("%w: property 0x%02X must not be 0", ErrMalformed, id)
		}
	}
	return p, true, nil
}

// skipAll validates the rest of the block, discarding the values.
func (it *propIter) skipAll() error {
	for {
		_, ok, err := it.next()
		if err != nil || !ok {
			return err
		}
	}
}

// Encoded sizes of properties, identifier included.
const (
	propLenU8  = 2
	propLenU16 = 3
	propLenU32 = 5
)

// propLenString is the encoded size of a String or Binary property.
func propLenString(n int) int { return 3 + n }

// propLenPair is the encoded size of a UTF-8 String Pair property.
func propLenPair(k, v int) int { return 5 + k + v }

func appendPropU8(dst []byte, id, v byte) []byte { return append(dst, id, v) }

func appendPropU16(dst []byte, id byte, v uint16) []byte {
	return appendU16(append(dst, id), v)
}

func appendPropU32(dst []byte, id byte, v uint32) []byte {
	return appendU32(append(dst, id), v)
}

func appendPropString(dst []byte, id byte, s string) []byte {
	return appendString(append(dst, id), s)
}

func appendPropBinary(dst []byte, id byte, b []byte) []byte {
	return appendBinary(append(dst, id), b)
}

func appendPropPair(dst []byte, id byte, k, v string) []byte {
	return appendString(appendString(append(dst, id), k), v)
}
