package wire

// This file holds the message structs. Every header is a JSON object with
// camelCase keys. Fields are only ever added, never renamed, removed or given
// a new meaning (see Protocol); a decoder ignores keys it does not know.

// Result states reported by an agent in Result.State.
const (
	// ResultApplied means the bundle passed `nginx -t`, is live and verified.
	ResultApplied = "applied"
	// ResultRejected means `nginx -t` refused the staged bundle; the old
	// bundle stays live and was never switched away from.
	ResultRejected = "rejected"
	// ResultRolledBack means the bundle was switched to but failed reload or
	// verification, and the agent switched back to the previous bundle.
	ResultRolledBack = "rolled_back"
	// ResultFailed means the agent could not complete the apply for another
	// reason (disk, decompression, hash mismatch); see Reason.
	ResultFailed = "failed"
)

// Payload encodings. Bundle and BundleData payloads are always gzip; a
// BundleDelta or DeltaData payload may also be identity.
const (
	// EncodingGzip is a gzip stream as produced by Compress.
	EncodingGzip = "gzip"
	// EncodingIdentity is the bytes themselves. Small deltas travel so:
	// inflating a few hundred bytes costs each of thousands of agents more
	// than the bytes it saves.
	EncodingIdentity = "identity"
)

// Capabilities a peer lists in Hello, Welcome or RelayHello. A feature is
// used only when both sides of a hop list it.
const (
	// CapBundleDelta: the hop carries bundle deltas (DeltaData from hub to
	// relay, BundleDelta from relay to agent, NeedBundle back) and a
	// receiver applies them to a bundle it already has.
	CapBundleDelta = "bundle-delta"
	// CapHeartbeatPong: the relay answers every Heartbeat with a pong,
	// and the agent sends no pings of its own. The pong then proves that
	// the relay read and handled the heartbeat, and an idle session costs
	// the relay one frame in and one out per interval instead of two in.
	CapHeartbeatPong = "heartbeat-pong"
)

// MaxOutput is the largest Result.Output a sender may put on the wire, in
// bytes. Senders apply TruncateOutput; it keeps a Result well under its
// 64 KiB limit even with long reasons and file names.
const MaxOutput = 8 << 10

// truncatedMark ends an Output that TruncateOutput shortened.
const truncatedMark = "\n[output truncated]"

// --- agent -> relay ---

// Hello is the first message an agent sends on a new session.
type Hello struct {
	// Protocol is the wire protocol version the agent speaks (its Protocol
	// constant). A relay that does not speak it closes with
	// CloseProtocolMismatch.
	Protocol int `json:"protocol"`
	// AgentVersion is the agent's build version, informational only.
	AgentVersion string `json:"agentVersion,omitempty"`
	// AppliedHash is the hash of the bundle currently live on the agent,
	// empty when it has never applied one.
	AppliedHash string `json:"appliedHash,omitempty"`
	// State is the agent's apply state at connect time, e.g. "idle",
	// "applying" or "drifted"; informational, new values may appear.
	State string `json:"state,omitempty"`
	// Capabilities lists optional features the agent supports; a peer uses a
	// feature only when both sides list it.
	Capabilities []string `json:"capabilities,omitempty"`
}

// Heartbeat is sent by an agent every Welcome.HeartbeatIntervalMs. It may be
// dropped under pressure; the next one supersedes it.
type Heartbeat struct {
	// AppliedHash is the hash of the bundle currently live on the agent.
	AppliedHash string `json:"appliedHash,omitempty"`
	// NginxUp reports whether the agent's nginx master process is running
	// and answered its last probe.
	NginxUp bool `json:"nginxUp"`
	// Seq increases by one per heartbeat within a session, so a receiver can
	// count gaps (dropped heartbeats).
	Seq uint64 `json:"seq"`
}

// Result reports the outcome of applying one bundle. It is never dropped: an
// agent keeps its last Result and sends it again after a reconnect until the
// relay has seen it (the relay reports it as AgentSession.LastResult).
type Result struct {
	// Hash is the hash of the bundle this result is about.
	Hash string `json:"hash"`
	// State is one of ResultApplied, ResultRejected, ResultRolledBack or
	// ResultFailed.
	State string `json:"state"`
	// Reason is a one-line human-readable cause when State is not applied.
	Reason string `json:"reason,omitempty"`
	// Output is the relevant nginx output (e.g. of `nginx -t`), at most
	// MaxOutput bytes; senders use TruncateOutput.
	Output string `json:"output,omitempty"`
	// File is the bundle-relative file nginx complained about, if any.
	File string `json:"file,omitempty"`
	// Line is the line in File nginx complained about, 0 when unknown.
	Line int `json:"line,omitempty"`
	// DurationMs is how long the apply took, in milliseconds.
	DurationMs int64 `json:"durationMs,omitempty"`
}

// --- relay -> agent ---

// Welcome answers a Hello the relay accepts.
type Welcome struct {
	// Protocol is the wire protocol version the relay speaks.
	Protocol int `json:"protocol"`
	// HeartbeatIntervalMs is how often the agent sends a Heartbeat, in
	// milliseconds.
	HeartbeatIntervalMs int64 `json:"heartbeatIntervalMs"`
	// DesiredHash is the bundle the agent should run; empty when none is
	// assigned yet. When it differs from Hello.AppliedHash a Bundle follows.
	DesiredHash string `json:"desiredHash,omitempty"`
	// Capabilities lists optional features the relay supports (DESIGN:
	// both sides state capabilities).
	Capabilities []string `json:"capabilities,omitempty"`
}

// Bundle carries a complete bundle to an agent; the compressed bundle bytes
// are the frame's payload. Relays treat it as opaque.
type Bundle struct {
	// Hash identifies the bundle; the agent verifies it after decompressing.
	Hash string `json:"hash"`
	// Encoding is how the payload is compressed: EncodingGzip.
	Encoding string `json:"encoding"`
	// Size is the uncompressed size in bytes; the receiver passes it (capped
	// by its own maximum) as the limit to Decompress.
	Size int64 `json:"size"`
}

// BundleDelta carries what turns a bundle the agent has (Base) into the
// bundle Hash: the payload is a delta (the nginx package's Diff encoding),
// opaque to relays. A relay sends it only to agents that list
// CapBundleDelta, and only when it knows Base is what the agent runs. An
// agent that cannot build Hash from it (Base gone, hash mismatch) answers
// NeedBundle and gets the whole Bundle; a delta is never nacked.
type BundleDelta struct {
	// Hash identifies the bundle the delta builds; the agent verifies it.
	Hash string `json:"hash"`
	// Base is the bundle the delta applies to.
	Base string `json:"base"`
	// Encoding is EncodingGzip or EncodingIdentity.
	Encoding string `json:"encoding"`
	// Size is the delta's size before encoding, in bytes.
	Size int64 `json:"size"`
}

// --- agent -> relay, continued ---

// NeedBundle asks the relay for the whole bundle Hash, after a BundleDelta
// toward it could not be applied.
type NeedBundle struct {
	// Hash is the bundle the agent wants whole.
	Hash string `json:"hash"`
	// Reason says why the delta did not do, for the relay's log.
	Reason string `json:"reason,omitempty"`
}

// --- relay -> hub ---

// RelayHello is the first message a relay sends on a hub session.
type RelayHello struct {
	// Protocol is the wire protocol version the relay speaks.
	Protocol int `json:"protocol"`
	// RelayVersion is the relay's build version, informational only.
	RelayVersion string `json:"relayVersion,omitempty"`
	// Capabilities lists optional features the relay supports.
	Capabilities []string `json:"capabilities,omitempty"`
}

// AgentSession describes one agent connected to a relay.
type AgentSession struct {
	// ID is the agent's id, taken from its client certificate by the relay
	// (never from anything the agent says).
	ID string `json:"id"`
	// Workspace is the agent's workspace, from its certificate.
	Workspace string `json:"workspace"`
	// AppliedHash is the bundle live on the agent, from its latest Hello or
	// Heartbeat.
	AppliedHash string `json:"appliedHash,omitempty"`
	// ConnectedAt is when the agent's session started, in Unix milliseconds.
	ConnectedAt int64 `json:"connectedAt,omitempty"`
	// LastResult is the agent's most recent Result, nil when none yet.
	LastResult *Result `json:"lastResult,omitempty"`
}

// Snapshot is the complete list of agent sessions on a relay, sent right
// after RelayHello on every (re)connect. The hub replaces whatever it knew
// about that relay's sessions with it.
type Snapshot struct {
	// Agents are all sessions currently connected to the relay.
	Agents []AgentSession `json:"agents"`
}

// SessionDelta reports session changes since the last Snapshot or
// SessionDelta. It is never dropped; if it cannot be sent the relay
// reconnects and sends a new Snapshot.
type SessionDelta struct {
	// Connected are sessions that started (or replaced an older session of
	// the same agent).
	Connected []AgentSession `json:"connected,omitempty"`
	// Disconnected are ids of agents whose session ended.
	Disconnected []string `json:"disconnected,omitempty"`
}

// AgentHeartbeat is one agent's heartbeat as forwarded by a relay.
type AgentHeartbeat struct {
	// Agent is the agent's id from its certificate.
	Agent string `json:"agent"`
	// AppliedHash is the bundle live on the agent.
	AppliedHash string `json:"appliedHash,omitempty"`
	// NginxUp reports whether the agent's nginx is running.
	NginxUp bool `json:"nginxUp"`
	// At is when the relay received the heartbeat, in Unix milliseconds.
	At int64 `json:"at"`
}

// Heartbeats is a batch of agent heartbeats. A relay may drop heartbeats
// under pressure (counting them); the hub treats a missing one as "no news".
type Heartbeats struct {
	// Items are the heartbeats, at most one per agent per batch.
	Items []AgentHeartbeat `json:"items"`
}

// AgentResult is one agent's Result as forwarded by a relay.
type AgentResult struct {
	// Agent is the agent's id from its certificate.
	Agent string `json:"agent"`
	// Result is the agent's report, unchanged.
	Result Result `json:"result"`
}

// Results is a batch of apply results. Results are never dropped: a relay
// keeps them until written, and the LastResult in the next Snapshot covers a
// batch lost with a connection.
type Results struct {
	// Items are the results in the order the relay received them.
	Items []AgentResult `json:"items"`
}

// FetchBundle asks the hub for the bytes of a bundle the relay does not have
// cached; the hub answers with BundleData.
type FetchBundle struct {
	// Hash identifies the bundle.
	Hash string `json:"hash"`
}

// --- hub -> relay ---

// DesiredBundle assigns a bundle to one agent.
type DesiredBundle struct {
	// Agent is the agent's id.
	Agent string `json:"agent"`
	// Hash is the bundle the agent should run.
	Hash string `json:"hash"`
}

// Desired is a batch of bundle assignments. It is idempotent: the hub sends
// the desired hash of every connected agent after a Snapshot, and changes as
// they happen.
type Desired struct {
	// Items are the assignments; a later item for the same agent wins.
	Items []DesiredBundle `json:"items"`
}

// BundleData carries a bundle's compressed bytes to a relay as the frame's
// payload, in answer to FetchBundle (or unprompted, before a rollout).
type BundleData struct {
	// Hash identifies the bundle.
	Hash string `json:"hash"`
	// Encoding is how the payload is compressed: EncodingGzip.
	Encoding string `json:"encoding"`
	// Size is the uncompressed size in bytes.
	Size int64 `json:"size"`
}

// DeltaData carries the delta from bundle Base to bundle Hash to a relay
// that listed CapBundleDelta, before the Desired items that need it; the
// payload is as in BundleDelta. The relay keeps it for the agents it knows
// run Base.
type DeltaData struct {
	// Hash identifies the bundle the delta builds.
	Hash string `json:"hash"`
	// Base is the bundle the delta applies to.
	Base string `json:"base"`
	// Encoding is EncodingGzip or EncodingIdentity.
	Encoding string `json:"encoding"`
	// Size is the delta's size before encoding, in bytes.
	Size int64 `json:"size"`
}

// Revoke tells a relay to end the sessions of agents whose certificates were
// revoked; the relay closes them with CloseRevoked and refuses them until
// their certificates no longer verify.
type Revoke struct {
	// Agents are the ids of the revoked agents.
	Agents []string `json:"agents"`
	// Reason is a short human-readable cause, sent on in the close frame.
	Reason string `json:"reason,omitempty"`
}

// Type implements Message.
func (*Hello) Type() Type { return TypeHello }

// Type implements Message.
func (*Heartbeat) Type() Type { return TypeHeartbeat }

// Type implements Message.
func (*Result) Type() Type { return TypeResult }

// Type implements Message.
func (*Welcome) Type() Type { return TypeWelcome }

// Type implements Message.
func (*Bundle) Type() Type { return TypeBundle }

// Type implements Message.
func (*RelayHello) Type() Type { return TypeRelayHello }

// Type implements Message.
func (*Snapshot) Type() Type { return TypeSnapshot }

// Type implements Message.
func (*SessionDelta) Type() Type { return TypeSessionDelta }

// Type implements Message.
func (*Heartbeats) Type() Type { return TypeHeartbeats }

// Type implements Message.
func (*Results) Type() Type { return TypeResults }

// Type implements Message.
func (*FetchBundle) Type() Type { return TypeFetchBundle }

// Type implements Message.
func (*Desired) Type() Type { return TypeDesired }

// Type implements Message.
func (*BundleData) Type() Type { return TypeBundleData }

// Type implements Message.
func (*Revoke) Type() Type { return TypeRevoke }

// Type implements Message.
func (*NeedBundle) Type() Type { return TypeNeedBundle }

// Type implements Message.
func (*BundleDelta) Type() Type { return TypeBundleDelta }

// Type implements Message.
func (*DeltaData) Type() Type { return TypeDeltaData }

// TruncateOutput shortens s to at most MaxOutput bytes, cutting on a UTF-8
// boundary and marking the cut, so a Result stays within its limit.
func TruncateOutput(s string) string {
	if len(s) <= MaxOutput {
		return s
	}
	return truncateUTF8(s, MaxOutput-len(truncatedMark)) + truncatedMark
}

// truncateUTF8 returns the longest prefix of s of at most n bytes that does
// not split a multi-byte character.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Back off over continuation bytes (10xxxxxx) to a character start.
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// IsHash reports whether h has the shape of a bundle hash: hex sha256,
// lower case. Relays check every hash a hub names before it can name a
// cache file, agents every release directory name. By hand, not a regexp:
// a relay checks every assignment of a push.
func IsHash(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
