package wire

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// BenchmarkCodec: each hot message through the exact-form codec (fast)
// and through encoding/json (json), encoded and decoded; batches of 256
// items, as a relay sends a push's results and the hub its assignments.
func BenchmarkCodec(b *testing.B) {
	h := strings.Repeat("ab", 32)
	results := &Results{}
	desired := &Desired{}
	heartbeats := &Heartbeats{}
	for i := range 256 {
		id := fmt.Sprintf("5f0c6a4e-0b1c-4f3e-9d7a-%012d", i)
		results.Items = append(results.Items, AgentResult{Agent: id, Result: Result{Hash: h, State: ResultApplied, DurationMs: 3}})
		desired.Items = append(desired.Items, DesiredBundle{Agent: id, Hash: h})
		heartbeats.Items = append(heartbeats.Items, AgentHeartbeat{Agent: id, AppliedHash: h, NginxUp: true, At: 1764400000000})
	}
	for _, m := range []Message{
		&Heartbeat{AppliedHash: h, NginxUp: true, Seq: 7},
		&Result{Hash: h, State: ResultApplied, DurationMs: 3},
		&BundleDelta{Hash: h, Base: h, Encoding: EncodingIdentity, Size: 812},
		results, desired, heartbeats,
	} {
		header := must(appendJSON(nil, m))
		// Relays frame a delta once per push: it has no fast encoder.
		if m.Type() != TypeBundleDelta {
			b.Run(m.Type().String()+"/encode/fast", func(b *testing.B) {
				buf := make([]byte, 0, 64<<10)
				b.ReportAllocs()
				for b.Loop() {
					buf = must(appendHeader(buf[:0], m))
				}
			})
			b.Run(m.Type().String()+"/encode/json", func(b *testing.B) {
				buf := make([]byte, 0, 64<<10)
				b.ReportAllocs()
				for b.Loop() {
					buf = must(appendJSON(buf[:0], m))
				}
			})
		}
		b.Run(m.Type().String()+"/decode/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := decodeFast(m.Type(), header); !ok {
					b.Fatal("the fast path refused it")
				}
			}
		})
		b.Run(m.Type().String()+"/decode/json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := json.Unmarshal(header, newMessage(m.Type())); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
