// Package wire owns the hub <-> relay <-> agent protocol: message types and
// their byte codes, framing, per-type size limits, close codes, bundle
// compression and a thin WebSocket connection wrapper. It imports nothing of
// NxMesh and knows nothing of nginx; bundles are opaque bytes to it.
// Compatibility rule: messages and fields are only ever added, never renamed,
// removed or given a new meaning, and every bump of Protocol gets a dated
// comment. See docs/protocol.md.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
)

// Protocol is the version of this protocol. Peers exchange it in Hello,
// Welcome and RelayHello and close with CloseProtocolMismatch when they do
// not speak the other's version. Bump it only for a change an older peer
// must know about; adding an optional field or a capability is not one.
//
//   - 2026-11-29: first version.
const Protocol = 1

// Type identifies a message on the wire; it is the first byte of every frame.
// The values are fixed forever: a retired type's byte is never reused.
type Type byte

// Message type bytes. Agent -> relay 0x01-0x0f, relay -> agent 0x10-0x1f,
// relay -> hub 0x20-0x2f, hub -> relay 0x30-0x3f. 0x00 is never valid.
const (
	TypeHello      Type = 0x01 // agent -> relay
	TypeHeartbeat  Type = 0x02 // agent -> relay
	TypeResult     Type = 0x03 // agent -> relay
	TypeNeedBundle Type = 0x04 // agent -> relay

	TypeWelcome     Type = 0x10 // relay -> agent
	TypeBundle      Type = 0x11 // relay -> agent, with payload
	TypeBundleDelta Type = 0x12 // relay -> agent, with payload

	TypeRelayHello   Type = 0x20 // relay -> hub
	TypeSnapshot     Type = 0x21 // relay -> hub
	TypeSessionDelta Type = 0x22 // relay -> hub
	TypeHeartbeats   Type = 0x23 // relay -> hub
	TypeResults      Type = 0x24 // relay -> hub
	TypeFetchBundle  Type = 0x25 // relay -> hub

	TypeDesired    Type = 0x30 // hub -> relay
	TypeBundleData Type = 0x31 // hub -> relay, with payload
	TypeRevoke     Type = 0x32 // hub -> relay
	TypeDeltaData  Type = 0x33 // hub -> relay, with payload
)

// Size limits per message type, counting the whole frame (type byte, header
// length, header and payload) as it travels in one WebSocket message. They
// bound what a receiver buffers before it decodes; a frame over its type's
// limit is refused with ErrTooLarge and the session closed with
// CloseTooLarge.
const (
	LimitHello        = 16 << 10 // a few versions and capabilities
	LimitHeartbeat    = 4 << 10  // a hash, a bool and a counter
	LimitResult       = 64 << 10 // MaxOutput of nginx output plus escaping
	LimitWelcome      = 4 << 10  // an interval and a hash
	LimitBundle       = 64 << 20 // compressed bundle payload
	LimitBundleData   = 64 << 20 // compressed bundle payload
	LimitSnapshot     = 32 << 20 // ~50k sessions with their last results
	LimitSessionDelta = 32 << 20
	LimitHeartbeats   = 32 << 20
	LimitResults      = 32 << 20
	LimitDesired      = 32 << 20
	LimitFetchBundle  = 1 << 10  // one hash
	LimitRevoke       = 1 << 20  // a list of agent ids
	LimitNeedBundle   = 1 << 10  // one hash and a short reason
	LimitBundleDelta  = 64 << 20 // a delta is at most a whole bundle
	LimitDeltaData    = 64 << 20

	// MaxAgentMessage is the largest frame an agent may send (a Result);
	// relays pass it to NewConn as the connection read limit for agents.
	MaxAgentMessage = LimitResult
	// MaxRelayMessage is the largest frame a relay may send (a Bundle to an
	// agent; to a hub at most 32 MiB); agents and hubs pass it to NewConn.
	MaxRelayMessage = LimitBundle
	// MaxHubMessage is the largest frame a hub may send (BundleData); relays
	// pass it to NewConn for their hub connection.
	MaxHubMessage = LimitBundleData
)

// MaxObjects is the most JSON objects one header may contain. Together with
// the per-type limit it bounds what decoding allocates: without it a 32 MiB
// header of "{}," would become ~11 million structs.
const MaxObjects = 1 << 20

// Errors returned by Decode, Conn.Read and Decompress. Callers branch on them
// with errors.Is; CloseCodeFor maps them to close codes.
var (
	// ErrUnknownType: the frame's type byte is not one this version knows.
	ErrUnknownType = errors.New("wire: unknown message type")
	// ErrTooLarge: a frame exceeds its type's limit, or decompressed data
	// exceeds the caller's limit.
	ErrTooLarge = errors.New("wire: message too large")
	// ErrTimeout: Conn.Read got nothing, not even a ping or pong, from the
	// peer within pingWait.
	ErrTimeout = errors.New("wire: peer silent past read deadline")
	// ErrMalformed: a frame is truncated, its header is not a JSON object of
	// the right shape, or it carries a payload its type does not allow.
	ErrMalformed = errors.New("wire: malformed message")
)

// Message is implemented by pointers to the message structs (*Hello, ...).
// Decode always returns a pointer.
type Message interface {
	// Type is the message's type byte.
	Type() Type
}

// Limit returns the largest frame of type t a receiver accepts, in bytes, or
// 0 when t is not a known type.
func Limit(t Type) int {
	switch t {
	case TypeHello:
		return LimitHello
	case TypeHeartbeat:
		return LimitHeartbeat
	case TypeResult:
		return LimitResult
	case TypeWelcome:
		return LimitWelcome
	case TypeBundle:
		return LimitBundle
	case TypeRelayHello:
		return LimitHello
	case TypeSnapshot:
		return LimitSnapshot
	case TypeSessionDelta:
		return LimitSessionDelta
	case TypeHeartbeats:
		return LimitHeartbeats
	case TypeResults:
		return LimitResults
	case TypeFetchBundle:
		return LimitFetchBundle
	case TypeDesired:
		return LimitDesired
	case TypeBundleData:
		return LimitBundleData
	case TypeRevoke:
		return LimitRevoke
	case TypeNeedBundle:
		return LimitNeedBundle
	case TypeBundleDelta:
		return LimitBundleDelta
	case TypeDeltaData:
		return LimitDeltaData
	}
	return 0
}

// String returns the message name, e.g. "hello", or "type(0x7f)".
func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeHeartbeat:
		return "heartbeat"
	case TypeResult:
		return "result"
	case TypeWelcome:
		return "welcome"
	case TypeBundle:
		return "bundle"
	case TypeRelayHello:
		return "relayHello"
	case TypeSnapshot:
		return "snapshot"
	case TypeSessionDelta:
		return "sessionDelta"
	case TypeHeartbeats:
		return "heartbeats"
	case TypeResults:
		return "results"
	case TypeFetchBundle:
		return "fetchBundle"
	case TypeDesired:
		return "desired"
	case TypeBundleData:
		return "bundleData"
	case TypeRevoke:
		return "revoke"
	case TypeNeedBundle:
		return "needBundle"
	case TypeBundleDelta:
		return "bundleDelta"
	case TypeDeltaData:
		return "deltaData"
	}
	return fmt.Sprintf("type(0x%02x)", byte(t))
}

// HasPayload reports whether frames of type t carry a payload after the
// header (only Bundle, BundleData, BundleDelta and DeltaData do).
func HasPayload(t Type) bool {
	return t == TypeBundle || t == TypeBundleData || t == TypeBundleDelta || t == TypeDeltaData
}

// newMessage returns a zero message of type t, or nil for an unknown type.
func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeHeartbeat:
		return new(Heartbeat)
	case TypeResult:
		return new(Result)
	case TypeWelcome:
		return new(Welcome)
	case TypeBundle:
		return new(Bundle)
	case TypeRelayHello:
		return new(RelayHello)
	case TypeSnapshot:
		return new(Snapshot)
	case TypeSessionDelta:
		return new(SessionDelta)
	case TypeHeartbeats:
		return new(Heartbeats)
	case TypeResults:
		return new(Results)
	case TypeFetchBundle:
		return new(FetchBundle)
	case TypeDesired:
		return new(Desired)
	case TypeBundleData:
		return new(BundleData)
	case TypeRevoke:
		return new(Revoke)
	case TypeNeedBundle:
		return new(NeedBundle)
	case TypeBundleDelta:
		return new(BundleDelta)
	case TypeDeltaData:
		return new(DeltaData)
	}
	return nil
}

// Encode builds the frame for m: type byte, uvarint header length, JSON
// header, payload. A payload is allowed only for the types HasPayload
// names. It fails with ErrTooLarge when the frame would exceed Limit(m.Type()), so a
// sender learns of an oversized message before its peer closes on it.
func Encode(m Message, payload []byte) ([]byte, error) {
	return appendFrame(nil, m, payload)
}

// appendFrame appends the frame Encode builds to dst; on an error it
// returns dst as it was.
func appendFrame(dst []byte, m Message, payload []byte) ([]byte, error) {
	if m == nil {
		return dst, fmt.Errorf("wire: encode nil message: %w", ErrMalformed)
	}
	t := m.Type()
	limit := Limit(t)
	if limit == 0 {
		return dst, fmt.Errorf("encode %s: %w", t, ErrUnknownType)
	}
	if len(payload) > 0 && !HasPayload(t) {
		return dst, fmt.Errorf("encode %s: payload not allowed: %w", t, ErrMalformed)
	}
	// The header goes where a one-byte length leaves it, and moves up when
	// its length takes more (headers of 128 bytes and more).
	start := len(dst)
	dst = append(dst, byte(t), 0)
	at := len(dst)
	out, err := appendHeader(dst, m)
	if err != nil {
		return dst[:start], fmt.Errorf("encode %s header: %w", t, err)
	}
	dst = out
	hlen := len(dst) - at
	var lenBuf [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(lenBuf[:], uint64(hlen))
	if size := 1 + n + hlen + len(payload); size > limit {
		return dst[:start], fmt.Errorf("encode %s: %d bytes, limit %d: %w", t, size, limit, ErrTooLarge)
	}
	if n > 1 {
		dst = append(dst, lenBuf[1:n]...)
		copy(dst[at+n-1:], dst[at:at+hlen])
	}
	copy(dst[start+1:], lenBuf[:n])
	return append(dst, payload...), nil
}

// appendJSON appends m as encoding/json writes it, without the newline
// and without escaping HTML (nginx output is full of < > &; keep it
// short).
func appendJSON(dst []byte, m Message) ([]byte, error) {
	var header bytes.Buffer
	enc := json.NewEncoder(&header)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return dst, err
	}
	return append(dst, bytes.TrimSuffix(header.Bytes(), []byte("\n"))...), nil
}

// Decode parses a frame built by Encode. The returned payload aliases frame
// (no copy) and is nil when empty. Unknown JSON keys are ignored so newer
// peers can add fields; a value of the wrong JSON type is an error. Decode
// never panics and refuses a frame over its type's limit before parsing it.
func Decode(frame []byte) (Message, []byte, error) {
	if len(frame) == 0 {
		return nil, nil, fmt.Errorf("decode: empty frame: %w", ErrMalformed)
	}
	t := Type(frame[0])
	limit := Limit(t)
	if limit == 0 {
		return nil, nil, fmt.Errorf("decode %s: %w", t, ErrUnknownType)
	}
	if len(frame) > limit {
		return nil, nil, fmt.Errorf("decode %s: %d bytes, limit %d: %w", t, len(frame), limit, ErrTooLarge)
	}
	hlen, n := binary.Uvarint(frame[1:])
	if n <= 0 {
		return nil, nil, fmt.Errorf("decode %s: bad header length: %w", t, ErrMalformed)
	}
	rest := frame[1+n:]
	if hlen > uint64(len(rest)) {
		return nil, nil, fmt.Errorf("decode %s: header length %d exceeds frame: %w", t, hlen, ErrMalformed)
	}
	header, payload := rest[:hlen], rest[hlen:]
	if len(header) == 0 || header[0] != '{' {
		return nil, nil, fmt.Errorf("decode %s: header is not a JSON object: %w", t, ErrMalformed)
	}
	if len(payload) > 0 && !HasPayload(t) {
		return nil, nil, fmt.Errorf("decode %s: unexpected %d-byte payload: %w", t, len(payload), ErrMalformed)
	}
	if len(payload) == 0 {
		payload = nil
	}
	if m, ok := decodeFast(t, header); ok {
		return m, payload, nil
	}
	if countObjects(header) > MaxObjects {
		return nil, nil, fmt.Errorf("decode %s: more than %d JSON objects: %w", t, MaxObjects, ErrTooLarge)
	}
	m := newMessage(t)
	if err := json.Unmarshal(header, m); err != nil {
		return nil, nil, fmt.Errorf("decode %s header: %v: %w", t, err, ErrMalformed)
	}
	return m, payload, nil
}

// countObjects counts '{' outside JSON strings. For invalid JSON the count
// is meaningless, but json.Unmarshal rejects such input anyway.
func countObjects(b []byte) int {
	n := 0
	inString, escaped := false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case c == '"':
			inString = !inString
		case !inString && c == '{':
			n++
		}
	}
	return n
}
