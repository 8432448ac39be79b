package wire

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"unicode/utf8"
)

// sampleMessages returns one fully populated message of every type, with
// the payload it travels with.
func sampleMessages() []struct {
	msg     Message
	payload []byte
} {
	res := Result{Hash: "sha256:ab", State: ResultRejected, Reason: "nginx -t failed",
		Output: "nginx: [emerg] unknown directive \"proxy_pas\" in /etc/nginx/x.conf:3 <&>", File: "sites/x.conf", Line: 3, DurationMs: 41}
	sess := AgentSession{ID: "agent-1", Workspace: "ws-1", AppliedHash: "sha256:aa", ConnectedAt: 1764400000000, LastResult: &res}
	return []struct {
		msg     Message
		payload []byte
	}{
		{&Hello{Protocol: Protocol, AgentVersion: "1.2.3", AppliedHash: "sha256:aa", State: "idle", Capabilities: []string{"delta"}}, nil},
		{&Heartbeat{AppliedHash: "sha256:aa", NginxUp: true, Seq: 1<<63 + 7}, nil},
		{&res, nil},
		{&Result{Hash: "sha256:ab", State: ResultApplied, DurationMs: 7}, nil},
		{&Welcome{Protocol: Protocol, HeartbeatIntervalMs: 10000, DesiredHash: "sha256:bb", Capabilities: []string{"delta"}}, nil},
		{&Bundle{Hash: "sha256:bb", Encoding: EncodingGzip, Size: 12345}, []byte{0x1f, 0x8b, 0, 1, 2, 3}},
		{&RelayHello{Protocol: Protocol, RelayVersion: "1.2.3", Capabilities: []string{"x"}}, nil},
		{&Snapshot{Agents: []AgentSession{sess, {ID: "agent-2", Workspace: "ws-1"}}}, nil},
		{&SessionDelta{Connected: []AgentSession{sess}, Disconnected: []string{"agent-3"}}, nil},
		{&Heartbeats{Items: []AgentHeartbeat{{Agent: "agent-1", AppliedHash: "sha256:aa", NginxUp: true, At: 1764400000001}}}, nil},
		{&Results{Items: []AgentResult{{Agent: "agent-1", Result: res}}}, nil},
		{&Results{Items: []AgentResult{{Agent: "agent-1", Result: Result{Hash: "sha256:ab", State: ResultApplied, DurationMs: 3}}, {Agent: "agent-2", Result: Result{State: ResultApplied}}}}, nil},
		{&FetchBundle{Hash: "sha256:bb"}, nil},
		{&Desired{Items: []DesiredBundle{{Agent: "agent-1", Hash: "sha256:bb"}}}, nil},
		{&BundleData{Hash: "sha256:bb", Encoding: EncodingGzip, Size: 12345}, []byte("opaque")},
		{&Revoke{Agents: []string{"agent-1", "agent-2"}, Reason: "key compromised"}, nil},
		{&NeedBundle{Hash: "sha256:bb", Reason: "base sha256:aa not kept"}, nil},
		{&BundleDelta{Hash: "sha256:bb", Base: "sha256:aa", Encoding: EncodingIdentity, Size: 6}, []byte("NXD1\x00\x00")},
		{&DeltaData{Hash: "sha256:bb", Base: "sha256:aa", Encoding: EncodingGzip, Size: 600}, []byte("opaque")},
	}
}

func TestRoundTripEveryType(t *testing.T) {
	seen := map[Type]bool{}
	for _, tc := range sampleMessages() {
		t.Run(tc.msg.Type().String(), func(t *testing.T) {
			frame, err := Encode(tc.msg, tc.payload)
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if Type(frame[0]) != tc.msg.Type() {
				t.Fatalf("type byte 0x%02x, want %s", frame[0], tc.msg.Type())
			}
			got, payload, err := Decode(frame)
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, tc.msg) {
				t.Errorf("decoded %#v, want %#v", got, tc.msg)
			}
			if !bytes.Equal(payload, tc.payload) {
				t.Errorf("payload %q, want %q", payload, tc.payload)
			}
		})
		seen[tc.msg.Type()] = true
	}
	// Every type byte with a limit must be covered above, and nothing else
	// may decode.
	for b := 0; b < 256; b++ {
		tp := Type(b)
		if Limit(tp) > 0 != seen[tp] {
			t.Errorf("%s: Limit %d but covered by round trip = %v", tp, Limit(tp), seen[tp])
		}
		if (newMessage(tp) != nil) != seen[tp] {
			t.Errorf("%s: newMessage and Limit disagree", tp)
		}
	}
}

// TestTypeBytesFixed pins the type bytes: they may never change.
func TestTypeBytesFixed(t *testing.T) {
	want := map[Type]byte{
		TypeHello: 0x01, TypeHeartbeat: 0x02, TypeResult: 0x03,
		TypeWelcome: 0x10, TypeBundle: 0x11,
		TypeRelayHello: 0x20, TypeSnapshot: 0x21, TypeSessionDelta: 0x22, TypeHeartbeats: 0x23, TypeResults: 0x24, TypeFetchBundle: 0x25,
		TypeDesired: 0x30, TypeBundleData: 0x31, TypeRevoke: 0x32,
		TypeNeedBundle: 0x04, TypeBundleDelta: 0x12, TypeDeltaData: 0x33,
	}
	for tp, b := range want {
		if byte(tp) != b {
			t.Errorf("%s = 0x%02x, fixed forever as 0x%02x", tp, byte(tp), b)
		}
	}
}

// TestDecodeIgnoresUnknownFields is the forward-compatibility promise: a
// newer peer's extra fields do not break an older decoder.
func TestDecodeIgnoresUnknownFields(t *testing.T) {
	frame := rawFrame(TypeHeartbeat, `{"appliedHash":"h","seq":3,"futureField":{"a":[1,2]},"nginxUp":true}`, nil)
	m, _, err := Decode(frame)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := &Heartbeat{AppliedHash: "h", Seq: 3, NginxUp: true}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("got %#v, want %#v", m, want)
	}
}

// rawFrame builds a frame by hand, bypassing Encode's checks.
func rawFrame(t Type, header string, payload []byte) []byte {
	f := []byte{byte(t)}
	f = binary.AppendUvarint(f, uint64(len(header)))
	f = append(f, header...)
	return append(f, payload...)
}

func TestDecodeErrors(t *testing.T) {
	valid, err := Encode(&Hello{Protocol: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tooManyObjects := `{"agents":[` + strings.Repeat(`{},`, MaxObjects) + `{}]}`
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrMalformed},
		{"type zero", []byte{0x00, 0x02, '{', '}'}, ErrUnknownType},
		{"unknown type", rawFrame(0x7f, `{}`, nil), ErrUnknownType},
		{"type byte only", []byte{byte(TypeHello)}, ErrMalformed},
		{"truncated uvarint", []byte{byte(TypeHello), 0x80}, ErrMalformed},
		{"uvarint overflow", append([]byte{byte(TypeHello)}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), ErrMalformed},
		{"header length max uint64", binary.AppendUvarint([]byte{byte(TypeHello)}, ^uint64(0)), ErrMalformed},
		{"header length past end", append([]byte{byte(TypeHello), 10}, `{}`...), ErrMalformed},
		{"truncated frame", valid[:len(valid)-1], ErrMalformed},
		{"empty header", rawFrame(TypeHello, ``, nil), ErrMalformed},
		{"null header", rawFrame(TypeHello, `null`, nil), ErrMalformed},
		{"array header", rawFrame(TypeHello, `[]`, nil), ErrMalformed},
		{"garbled json", rawFrame(TypeHello, `{"protocol":1,`, nil), ErrMalformed},
		{"trailing junk", rawFrame(TypeHello, `{"protocol":1}x`, nil), ErrMalformed},
		{"wrong json type int", rawFrame(TypeHello, `{"protocol":"1"}`, nil), ErrMalformed},
		{"wrong json type bool", rawFrame(TypeHeartbeat, `{"nginxUp":"yes"}`, nil), ErrMalformed},
		{"negative seq", rawFrame(TypeHeartbeat, `{"seq":-1}`, nil), ErrMalformed},
		{"wrong json type slice", rawFrame(TypeSnapshot, `{"agents":{}}`, nil), ErrMalformed},
		{"wrong json type nested", rawFrame(TypeResults, `{"items":[{"result":[]}]}`, nil), ErrMalformed},
		{"payload on hello", rawFrame(TypeHello, `{}`, []byte("x")), ErrMalformed},
		{"oversized heartbeat", rawFrame(TypeHeartbeat, `{"appliedHash":"`+strings.Repeat("a", LimitHeartbeat)+`"}`, nil), ErrTooLarge},
		{"oversized fetchBundle", rawFrame(TypeFetchBundle, `{"hash":"`+strings.Repeat("a", LimitFetchBundle)+`"}`, nil), ErrTooLarge},
		{"oversized bundle", rawFrame(TypeBundle, `{}`, make([]byte, LimitBundle)), ErrTooLarge},
		{"too many objects", rawFrame(TypeSnapshot, tooManyObjects, nil), ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, p, err := Decode(tc.frame)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Decode = %v, %q, %v; want error %v", m, p, err, tc.want)
			}
		})
	}
}

func TestDecodeAtLimit(t *testing.T) {
	// A frame of exactly the limit is accepted.
	header := `{"hash":"` + strings.Repeat("a", LimitFetchBundle) + `"}`
	over := len(rawFrame(TypeFetchBundle, header, nil)) - LimitFetchBundle
	frame := rawFrame(TypeFetchBundle, header[:len(header)-2-over]+`"}`, nil)
	if len(frame) != LimitFetchBundle {
		t.Fatalf("test frame is %d bytes", len(frame))
	}
	if _, _, err := Decode(frame); err != nil {
		t.Fatalf("Decode at limit: %v", err)
	}
}

func TestEncodeErrors(t *testing.T) {
	tests := []struct {
		name    string
		msg     Message
		payload []byte
		want    error
	}{
		{"nil", nil, nil, ErrMalformed},
		{"payload on hello", &Hello{}, []byte("x"), ErrMalformed},
		{"oversized heartbeat", &Heartbeat{AppliedHash: strings.Repeat("a", LimitHeartbeat)}, nil, ErrTooLarge},
		{"oversized result", &Result{Output: strings.Repeat("a", LimitResult)}, nil, ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Encode(tc.msg, tc.payload); !errors.Is(err, tc.want) {
				t.Fatalf("Encode = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestMaxResultFits: a Result with the largest output and pathological
// escaping still fits its limit.
func TestMaxResultFits(t *testing.T) {
	out := TruncateOutput(strings.Repeat("\x01", 100<<10))
	if len(out) > MaxOutput {
		t.Fatalf("TruncateOutput left %d bytes", len(out))
	}
	r := &Result{Hash: strings.Repeat("h", 128), State: ResultFailed, Reason: strings.Repeat("r", 1024), Output: out, File: strings.Repeat("f", 1024), Line: 1 << 30, DurationMs: 1 << 40}
	if _, err := Encode(r, nil); err != nil {
		t.Fatalf("Encode worst-case Result: %v", err)
	}
}

func TestTruncateOutput(t *testing.T) {
	if got := TruncateOutput("short"); got != "short" {
		t.Errorf("TruncateOutput(short) = %q", got)
	}
	long := strings.Repeat("é", MaxOutput) // 2 bytes each
	got := TruncateOutput(long)
	if len(got) > MaxOutput || !utf8.ValidString(got) || !strings.HasSuffix(got, truncatedMark) {
		t.Errorf("TruncateOutput: %d bytes, valid UTF-8 %v", len(got), utf8.ValidString(got))
	}
}

func TestCloseMessage(t *testing.T) {
	msg := CloseMessage(CloseRevoked, strings.Repeat("é", 100))
	if len(msg) > 125 {
		t.Fatalf("close payload %d bytes, control frames hold 125", len(msg))
	}
	if code := int(binary.BigEndian.Uint16(msg)); code != CloseRevoked {
		t.Errorf("code %d", code)
	}
	if !utf8.Valid(msg[2:]) {
		t.Errorf("reason cut inside a character: %q", msg[2:])
	}
	if r := ProtocolMismatchReason(1, 2); !strings.Contains(r, "1") || !strings.Contains(r, "2") {
		t.Errorf("mismatch reason %q does not name both versions", r)
	}
}

func TestCompressRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte("server { listen 80; }\n"), 1000)
	z, err := Compress(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decompress(z, len(data))
	if err != nil {
		t.Fatalf("Decompress at exact limit: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("round trip changed data")
	}
	if _, err := Decompress(z, len(data)-1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decompress one byte under: %v, want ErrTooLarge", err)
	}
	if _, err := Decompress([]byte("not gzip"), 100); err == nil || errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decompress garbage: %v", err)
	}
	if _, err := Decompress(z[:len(z)-4], len(data)); err == nil {
		t.Fatal("Decompress truncated stream: no error")
	}
}

// TestHeartbeatFastPath: Decode takes the heartbeats Encode writes
// without encoding/json, and anything else a peer may send still decodes
// (or fails) as encoding/json says.
func TestHeartbeatFastPath(t *testing.T) {
	testFastPath(t, TypeHeartbeat, decodeHeartbeat, 2, []Heartbeat{
		{},
		{AppliedHash: strings.Repeat("ab", 32), NginxUp: true, Seq: 1},
		{AppliedHash: "sha256:x-y_z.0", Seq: math.MaxUint64},
	}, []fastPathCase[Heartbeat]{
		{`{"seq":2,"nginxUp":true}`, &Heartbeat{Seq: 2, NginxUp: true}},
		{`{"nginxUp": true,"seq":2}`, &Heartbeat{Seq: 2, NginxUp: true}},
		{`{"appliedHash":"a\u0062","nginxUp":true,"seq":2}`, &Heartbeat{AppliedHash: "ab", Seq: 2, NginxUp: true}},
		{`{"appliedHash":"ab","nginxUp":true,"seq":2,"new":1}`, &Heartbeat{AppliedHash: "ab", Seq: 2, NginxUp: true}},
		{`{"appliedHash":"","nginxUp":false,"seq":3}`, &Heartbeat{Seq: 3}},
		{`{"nginxUp":true,"seq":02}`, nil},
		{`{"nginxUp":true,"seq":18446744073709551616}`, nil},
		{`{"nginxUp":true,"seq":-1}`, nil},
		{`{"nginxUp":true,"seq":1}x`, nil},
	})
}

// TestResultFastPath: Decode takes the applied results Encode writes
// without encoding/json; a failure's result, and anything else a peer may
// send, still decodes (or fails) as encoding/json says.
func TestResultFastPath(t *testing.T) {
	testFastPath(t, TypeResult, decodeResult, 2, []Result{
		{State: ResultApplied},
		{Hash: strings.Repeat("ab", 32), State: ResultApplied, DurationMs: 12},
		{Hash: "sha256:x-y_z.0", State: ResultApplied, DurationMs: math.MaxInt64},
	}, []fastPathCase[Result]{
		{`{"hash":"ab","state":"rejected","reason":"nginx -t failed","output":"x","durationMs":3}`,
			&Result{Hash: "ab", State: ResultRejected, Reason: "nginx -t failed", Output: "x", DurationMs: 3}},
		{`{"state":"applied","hash":"ab"}`, &Result{Hash: "ab", State: ResultApplied}},
		{`{"hash":"a\u0062","state":"applied"}`, &Result{Hash: "ab", State: ResultApplied}},
		{`{"hash":"ab","state":"applied","durationMs":0}`, &Result{Hash: "ab", State: ResultApplied}},
		{`{"hash":"ab","state":"applied","durationMs":-4}`, &Result{Hash: "ab", State: ResultApplied, DurationMs: -4}},
		{`{"hash":"ab","state":"applied","line":2}`, &Result{Hash: "ab", State: ResultApplied, Line: 2}},
		{`{"hash":"ab","state":"applied","durationMs":07}`, nil},
		{`{"hash":"ab","state":"applied","durationMs":9223372036854775808}`, nil},
		{`{"hash":"ab","state":"applied"}x`, nil},
	})
}

// TestBundleDeltaFastPath: every agent reads a delta's header in a push.
func TestBundleDeltaFastPath(t *testing.T) {
	h := strings.Repeat("ab", 32)
	testFastPath(t, TypeBundleDelta, decodeBundleDelta, 4, []BundleDelta{
		{},
		{Hash: "sha256:" + h, Base: "sha256:" + h, Encoding: EncodingIdentity, Size: 812},
		{Hash: h, Base: h, Encoding: EncodingGzip, Size: math.MaxInt64},
	}, []fastPathCase[BundleDelta]{
		{`{"base":"b","hash":"a","encoding":"gzip","size":1}`, &BundleDelta{Hash: "a", Base: "b", Encoding: EncodingGzip, Size: 1}},
		{`{"hash":"a","base":"b\u0062","encoding":"gzip","size":1}`, &BundleDelta{Hash: "a", Base: "bb", Encoding: EncodingGzip, Size: 1}},
		{`{"hash":"a","base":"b","encoding":"gzip","size":-1}`, &BundleDelta{Hash: "a", Base: "b", Encoding: EncodingGzip, Size: -1}},
		{`{"hash":"a","base":"b","encoding":"gzip","size":1,"new":2}`, &BundleDelta{Hash: "a", Base: "b", Encoding: EncodingGzip, Size: 1}},
		{`{"hash":"a","base":"b","encoding":"gzip","size":1.5}`, nil},
		{`{"hash":"a","base":"b","encoding":"gzip","size":01}`, nil},
		{`{"hash":"a","base":"b","encoding":"gzip","size":9223372036854775808}`, nil},
		{`{"hash":"a","base":"b","encoding":"gzip","size":1}}`, nil},
	})
}

// TestResultsFastPath: the hub reads every agent's result of a push in a
// relay's batches.
func TestResultsFastPath(t *testing.T) {
	applied := func(agent, hash string, ms int64) AgentResult {
		return AgentResult{Agent: agent, Result: Result{Hash: hash, State: ResultApplied, DurationMs: ms}}
	}
	h := "sha256:" + strings.Repeat("ab", 32)
	testFastPath(t, TypeResults, decodeResults, 7, []Results{
		{Items: []AgentResult{applied("agent-1", h, 0)}},
		{Items: []AgentResult{applied("5f0c6a4e-0b1c-4f3e-9d7a-2f1e8b9c0d11", h, 4), applied("agent-2", "", 0)}},
	}, []fastPathCase[Results]{
		{`{"items":[]}`, &Results{Items: []AgentResult{}}},
		{`{"items":null}`, &Results{}},
		{`{"items":[{"result":{"hash":"a","state":"applied"},"agent":"x"}]}`, &Results{Items: []AgentResult{applied("x", "a", 0)}}},
		{`{"items":[{"agent":"x\u0079","result":{"hash":"a","state":"applied"}}]}`, &Results{Items: []AgentResult{applied("xy", "a", 0)}}},
		{`{"items":[{"agent":"x","result":{"hash":"a","state":"applied"}},{"agent":"y","result":{"hash":"a","state":"rejected","reason":"r"}}]}`,
			&Results{Items: []AgentResult{applied("x", "a", 0), {Agent: "y", Result: Result{Hash: "a", State: ResultRejected, Reason: "r"}}}}},
		{`{"items":[{"agent":"x","result":{"hash":"a","state":"applied"}},]}`, nil},
		{`{"items":[{"agent":"x","result":{"hash":"a","state":"applied"}}]}x`, nil},
		{`{"items":[{"agent":"x","result":{"hash":"a","state":"applied","durationMs":-1}}]}`,
			&Results{Items: []AgentResult{applied("x", "a", -1)}}},
	})
	// A batch with a failure goes through encoding/json both ways.
	failed := Results{Items: []AgentResult{applied("x", "a", 0), {Agent: "y", Result: Result{Hash: "a", State: ResultFailed, Output: "<&>"}}}}
	frame, err := Encode(&failed, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := decodeResults(frame[2:]); ok {
		t.Errorf("fast path took a failure's result: %s", frame[2:])
	}
	if m, _, err := Decode(frame); err != nil || !reflect.DeepEqual(m, &failed) {
		t.Errorf("Decode = %+v, %v; want %+v", m, err, failed)
	}
}

// TestDesiredFastPath: a relay reads its agents' assignments of a push in
// the hub's batches.
func TestDesiredFastPath(t *testing.T) {
	h := "sha256:" + strings.Repeat("ab", 32)
	testFastPath(t, TypeDesired, decodeDesired, 6, []Desired{
		{Items: []DesiredBundle{{Agent: "agent-1", Hash: h}}},
		{Items: []DesiredBundle{{Agent: "5f0c6a4e-0b1c-4f3e-9d7a-2f1e8b9c0d11", Hash: h}, {Agent: "agent-2"}}},
	}, []fastPathCase[Desired]{
		{`{"items":[]}`, &Desired{Items: []DesiredBundle{}}},
		{`{"items":null}`, &Desired{}},
		{`{"items":[{"hash":"a","agent":"x"}]}`, &Desired{Items: []DesiredBundle{{Agent: "x", Hash: "a"}}}},
		{`{"items":[{"agent":"x","hash":"a\u0062"}]}`, &Desired{Items: []DesiredBundle{{Agent: "x", Hash: "ab"}}}},
		{`{"items":[{"agent":"x","hash":"a"},]}`, nil},
		{`{"items":[{"agent":"x","hash":"a"}]} `, &Desired{Items: []DesiredBundle{{Agent: "x", Hash: "a"}}}},
		{`{"items":[{"agent":"x","hash":"a"}]}x`, nil},
	})
}

// TestHeartbeatsFastPath: a relay forwards every agent's heartbeats to
// the hub in batches.
func TestHeartbeatsFastPath(t *testing.T) {
	h := "sha256:" + strings.Repeat("ab", 32)
	testFastPath(t, TypeHeartbeats, decodeHeartbeats, 6, []Heartbeats{
		{Items: []AgentHeartbeat{{Agent: "agent-1", AppliedHash: h, NginxUp: true, At: 1764400000001}}},
		{Items: []AgentHeartbeat{{Agent: "5f0c6a4e-0b1c-4f3e-9d7a-2f1e8b9c0d11", At: math.MaxInt64}, {Agent: "agent-2", AppliedHash: h}}},
	}, []fastPathCase[Heartbeats]{
		{`{"items":[]}`, &Heartbeats{Items: []AgentHeartbeat{}}},
		{`{"items":null}`, &Heartbeats{}},
		{`{"items":[{"at":1,"agent":"x","nginxUp":true}]}`, &Heartbeats{Items: []AgentHeartbeat{{Agent: "x", NginxUp: true, At: 1}}}},
		{`{"items":[{"agent":"x","appliedHash":"","nginxUp":true,"at":1}]}`, &Heartbeats{Items: []AgentHeartbeat{{Agent: "x", NginxUp: true, At: 1}}}},
		{`{"items":[{"agent":"x","nginxUp":false,"at":-1}]}`, &Heartbeats{Items: []AgentHeartbeat{{Agent: "x", At: -1}}}},
		{`{"items":[{"agent":"x","nginxUp":false,"at":1.5}]}`, nil},
		{`{"items":[{"agent":"x","nginxUp":0,"at":1}]}`, nil},
		{`{"items":[{"agent":"x","nginxUp":false,"at":1}]}x`, nil},
	})
}

// TestEncodeLongHeader: a header of 128 bytes or more takes a two-byte
// length, which appendFrame makes room for after the header is written.
func TestEncodeLongHeader(t *testing.T) {
	for _, n := range []int{100, 117, 118, 119, 200, 4000} {
		hb := &Heartbeat{AppliedHash: strings.Repeat("a", n), Seq: 1}
		frame, err := Encode(hb, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := rawFrame(TypeHeartbeat, string(must(appendJSON(nil, hb))), nil)
		if !bytes.Equal(frame, want) {
			t.Errorf("hash of %d: frame %q, want %q", n, frame, want)
		}
		prefix := []byte("xyz")
		if got := must(appendFrame(prefix, hb, nil)); !bytes.Equal(got[:3], prefix) || !bytes.Equal(got[3:], want) {
			t.Errorf("hash of %d: appended %q", n, got)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// fastPathCase is a header a peer may send and what Decode must make of
// it (nil: an error).
type fastPathCase[T any] struct {
	header string
	want   *T
}

// testFastPath checks a message type's fast decoder: it takes every value
// of encoded as Encode writes it, and Decode gives each back; for each
// case Decode gives what the case wants, and the fast decoder, when it
// takes the header at all, gives the same.
func testFastPath[T any](t *testing.T, typ Type, fast func([]byte) (*T, bool), maxAllocs float64, encoded []T, cases []fastPathCase[T]) {
	t.Helper()
	for _, v := range encoded {
		frame, err := Encode(any(&v).(Message), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, n := binary.Uvarint(frame[1:])
		if got, ok := fast(frame[1+n:]); !ok || !reflect.DeepEqual(*got, v) {
			t.Errorf("fast path on %q: %+v, %v; want %+v", frame[1+n:], got, ok, v)
		}
		if m, _, err := Decode(frame); err != nil || !reflect.DeepEqual(*any(m).(*T), v) {
			t.Errorf("Decode %+v: %v, %v", v, m, err)
		}
		// Decode takes the fast path: the message and its strings are all
		// it allocates, where encoding/json makes several times that.
		if a := testing.AllocsPerRun(20, func() { _, _, _ = Decode(frame) }); a > maxAllocs {
			t.Errorf("Decode %+v: %.0f allocations, want at most %.0f (the fast path)", v, a, maxAllocs)
		}
		// Encoding it takes the fast path too, into Write's pooled buffer
		// (relays build a delta's frame once per push: it has none).
		m := any(&v).(Message)
		if typ == TypeBundleDelta {
			continue
		}
		if a := testing.AllocsPerRun(20, func() { putFrame(must(appendFrame(getFrame(), m, nil))) }); a > 0 {
			t.Errorf("appendFrame %+v: %.0f allocations, want none (the fast path)", v, a)
		}
	}
	for _, tc := range cases {
		if got, ok := fast([]byte(tc.header)); ok && (tc.want == nil || !reflect.DeepEqual(*got, *tc.want)) {
			t.Errorf("fast path took %s: %+v", tc.header, *got)
		}
		m, _, err := Decode(rawFrame(typ, tc.header, nil))
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("Decode %s = %+v, want an error", tc.header, m)
		case tc.want != nil && (err != nil || !reflect.DeepEqual(*any(m).(*T), *tc.want)):
			t.Errorf("Decode %s = %v, %v; want %+v", tc.header, m, err, *tc.want)
		}
	}
}

func TestDecodePayload(t *testing.T) {
	data := []byte("NXD1 a small delta")
	z, _ := Compress(data)
	for _, tc := range []struct {
		enc     string
		payload []byte
		limit   int
		want    error // nil: data back
	}{
		{EncodingIdentity, data, len(data), nil},
		{EncodingGzip, z, len(data), nil},
		{EncodingIdentity, data, len(data) - 1, ErrTooLarge},
		{EncodingGzip, z, len(data) - 1, ErrTooLarge},
		{"br", data, 100, errors.New("unknown payload encoding")},
	} {
		got, err := DecodePayload(tc.enc, tc.payload, tc.limit)
		switch {
		case tc.want == nil && (err != nil || !bytes.Equal(got, data)):
			t.Errorf("%s, limit %d: %q, %v; want the data", tc.enc, tc.limit, got, err)
		case tc.want != nil && (err == nil || !errors.Is(err, tc.want) && !strings.Contains(err.Error(), tc.want.Error())):
			t.Errorf("%s, limit %d: err %v, want %v", tc.enc, tc.limit, err, tc.want)
		}
	}
}

func TestDecompressRefusesBomb(t *testing.T) {
	// 16 MiB of zeros compress to ~16 KiB (1000:1); with a 1 MiB limit
	// Decompress must refuse and allocate about the limit, not 16 MiB.
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(make([]byte, 16<<20))
	zw.Close()
	const limit = 1 << 20
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	out, err := Decompress(buf.Bytes(), limit)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Decompress bomb = %d bytes, %v; want ErrTooLarge", len(out), err)
	}
	// Growth doubles up to the limit (~2x), plus the gzip reader's state.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*limit {
		t.Errorf("Decompress allocated %d bytes for a %d-byte limit", alloc, limit)
	}
}

func FuzzDecode(f *testing.F) {
	for _, tc := range sampleMessages() {
		frame, err := Encode(tc.msg, tc.payload)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame)
	}
	f.Add([]byte{})
	f.Add([]byte{byte(TypeHello), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add(rawFrame(TypeSnapshot, `{"agents":[{"lastResult":{"line":"x"}}]}`, nil))
	f.Add(rawFrame(TypeHeartbeat, `{"nginxUp":false,"seq":0}`, nil))
	f.Add(rawFrame(TypeHeartbeat, `{"appliedHash":"sha256:ab","nginxUp":true,"seq":18446744073709551615}`, nil))
	f.Add(rawFrame(TypeResult, `{"hash":"ab","state":"applied","durationMs":9223372036854775807}`, nil))
	f.Add(rawFrame(TypeResult, `{"hash":"","state":"applied"}`, nil))
	f.Fuzz(func(t *testing.T, frame []byte) {
		// The fast paths accept only what encoding/json decodes to the
		// same value.
		if len(frame) > 1 {
			if hlen, n := binary.Uvarint(frame[1:]); n > 0 && hlen <= uint64(len(frame)-1-n) {
				header := frame[1+n : 1+n+int(hlen)]
				agreesWithJSON(t, header, decodeHeartbeat)
				agreesWithJSON(t, header, decodeResult)
				agreesWithJSON(t, header, decodeBundleDelta)
				agreesWithJSON(t, header, decodeResults)
				agreesWithJSON(t, header, decodeDesired)
				agreesWithJSON(t, header, decodeHeartbeats)
			}
		}
		m, payload, err := Decode(frame)
		if err != nil {
			if m != nil || payload != nil {
				t.Fatalf("error %v with non-nil results", err)
			}
			return
		}
		if len(payload) > 0 && !HasPayload(m.Type()) {
			t.Fatalf("%s decoded with payload", m.Type())
		}
		// What decodes re-encodes (unless escaping grew it past the limit)
		// and decodes to the same value.
		again, err := Encode(m, payload)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("re-encode %s: %v", m.Type(), err)
		}
		// The fast encoders write what encoding/json writes.
		if fast, slow := must(appendHeader(nil, m)), must(appendJSON(nil, m)); !bytes.Equal(fast, slow) {
			t.Fatalf("%s header %q; encoding/json: %q", m.Type(), fast, slow)
		}
		m2, p2, err := Decode(again)
		if err != nil {
			t.Fatalf("decode re-encoded %s: %v", m.Type(), err)
		}
		if !reflect.DeepEqual(m, m2) || !bytes.Equal(payload, p2) {
			t.Fatalf("re-encode changed %s: %#v vs %#v", m.Type(), m, m2)
		}
	})
}

// agreesWithJSON fails t when fast takes header and encoding/json decodes
// it to something else, or refuses it.
func agreesWithJSON[T any](t *testing.T, header []byte, fast func([]byte) (*T, bool)) {
	t.Helper()
	got, ok := fast(header)
	if !ok {
		return
	}
	var slow T
	if err := json.Unmarshal(header, &slow); err != nil || !reflect.DeepEqual(slow, *got) {
		t.Fatalf("fast path decoded %q to %+v; encoding/json: %+v, %v", header, *got, slow, err)
	}
}

// FuzzEncode: the fast encoders write exactly what encoding/json writes,
// or leave the message to it.
func FuzzEncode(f *testing.F) {
	f.Add("sha256:ab", ResultApplied, "", int64(3), uint64(1), true, "agent-1")
	f.Add("", "", "", int64(-1), uint64(math.MaxUint64), false, "")
	f.Add("a\"b", ResultRejected, "nginx -t", int64(0), uint64(0), true, "<&>")
	f.Fuzz(func(t *testing.T, hash, state, reason string, ms int64, seq uint64, up bool, agent string) {
		res := Result{Hash: hash, State: state, Reason: reason, DurationMs: ms}
		for _, m := range []Message{
			&Heartbeat{AppliedHash: hash, NginxUp: up, Seq: seq},
			&res,
			&Results{Items: []AgentResult{{Agent: agent, Result: res}, {Agent: "agent-2", Result: Result{Hash: hash, State: ResultApplied}}}},
			&Desired{Items: []DesiredBundle{{Agent: agent, Hash: hash}, {Agent: "agent-2", Hash: state}}},
			&Heartbeats{Items: []AgentHeartbeat{{Agent: agent, AppliedHash: hash, NginxUp: up, At: ms}, {Agent: "agent-2", AppliedHash: state, At: int64(seq)}}},
		} {
			slow, err := appendJSON(nil, m)
			if err != nil {
				t.Fatal(err)
			}
			if fast := must(appendHeader(nil, m)); !bytes.Equal(fast, slow) {
				t.Fatalf("%s header %q; encoding/json: %q", m.Type(), fast, slow)
			}
		}
	})
}

// TestIsHash: only a lower-case hex sha256 names a bundle (and a file in
// the cache directory).
func TestIsHash(t *testing.T) {
	h := strings.Repeat("0123456789abcdef", 4)
	for s, want := range map[string]bool{
		h:                                true,
		h[:63]:                           false,
		h + "0":                          false,
		strings.ToUpper(h):               false,
		h[:63] + "g":                     false,
		"":                               false,
		"../" + h[3:]:                    false,
		strings.Repeat("f", 63) + "\x00": false,
		strings.Repeat("a", 32) + strings.Repeat("9", 32): true,
	} {
		if got := IsHash(s); got != want {
			t.Errorf("IsHash(%q) = %v, want %v", s, got, want)
		}
	}
}
