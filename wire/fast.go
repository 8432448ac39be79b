package wire

import (
	"bytes"
	"math"
	"strconv"
)

// Hand-written codecs for the messages a fleet sends by the hundred
// thousand: heartbeats, results, deltas, and the batches of heartbeats,
// results and assignments between relays and the hub. Each takes exactly
// the form encoding/json gives its message and nothing else; anything
// else a peer sends still goes through encoding/json, so the protocol is
// JSON as before and these are a shortcut only. In a push to 50,000
// agents encoding/json was a tenth of the CPU of every process that
// handled one of them (docs/bench.md). FuzzDecode and FuzzEncode check
// that both ways agree; BenchmarkCodec measures them against it.

// appendHeader appends m's JSON header to dst: through one of the
// encoders below when it takes m, else through encoding/json.
func appendHeader(dst []byte, m Message) ([]byte, error) {
	var ok bool
	var out []byte
	switch m := m.(type) {
	case *Heartbeat:
		out, ok = appendHeartbeat(dst, m)
	case *Result:
		out, ok = appendResult(dst, m)
	case *Results:
		out, ok = appendResults(dst, m)
	case *Desired:
		out, ok = appendDesired(dst, m)
	case *Heartbeats:
		out, ok = appendHeartbeats(dst, m)
	}
	if ok {
		return out, nil
	}
	return appendJSON(dst, m)
}

// appendHeartbeat appends hb as encoding/json writes it,
// {"appliedHash":"…","nginxUp":…,"seq":…} (the hash left out when
// empty), when the hash needs no escaping.
func appendHeartbeat(dst []byte, hb *Heartbeat) ([]byte, bool) {
	if !plainToken(hb.AppliedHash) {
		return dst, false
	}
	dst = append(dst, '{')
	if hb.AppliedHash != "" {
		dst = append(dst, `"appliedHash":"`...)
		dst = append(dst, hb.AppliedHash...)
		dst = append(dst, `",`...)
	}
	dst = append(dst, `"nginxUp":`...)
	dst = strconv.AppendBool(dst, hb.NginxUp)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, hb.Seq, 10)
	return append(dst, '}'), true
}

// appendResult appends r as encoding/json writes it when r has no reason,
// output, file or line (a bundle applied) and its hash and state need no
// escaping: {"hash":"…","state":"…"}, with ,"durationMs":… before the
// brace when not zero.
func appendResult(dst []byte, r *Result) ([]byte, bool) {
	if r.Reason != "" || r.Output != "" || r.File != "" || r.Line != 0 || !plainToken(r.Hash) || !plainToken(r.State) {
		return dst, false
	}
	dst = append(dst, `{"hash":"`...)
	dst = append(dst, r.Hash...)
	dst = append(dst, `","state":"`...)
	dst = append(dst, r.State...)
	dst = append(dst, '"')
	if r.DurationMs != 0 {
		dst = append(dst, `,"durationMs":`...)
		dst = strconv.AppendInt(dst, r.DurationMs, 10)
	}
	return append(dst, '}'), true
}

// appendResults appends a batch as encoding/json writes it,
// {"items":[{"agent":"…","result":{…}},…]}, when every item's agent needs
// no escaping and appendResult takes its result.
func appendResults(dst []byte, rs *Results) ([]byte, bool) {
	return appendItems(dst, rs.Items, func(dst []byte, it *AgentResult) ([]byte, bool) {
		if !plainToken(it.Agent) {
			return dst, false
		}
		dst = append(dst, `{"agent":"`...)
		dst = append(dst, it.Agent...)
		dst = append(dst, `","result":`...)
		dst, ok := appendResult(dst, &it.Result)
		return append(dst, '}'), ok
	})
}

// appendDesired appends a batch of assignments as encoding/json writes
// it, {"items":[{"agent":"…","hash":"…"},…]}, when no agent or hash needs
// escaping.
func appendDesired(dst []byte, d *Desired) ([]byte, bool) {
	return appendItems(dst, d.Items, func(dst []byte, it *DesiredBundle) ([]byte, bool) {
		if !plainToken(it.Agent) || !plainToken(it.Hash) {
			return dst, false
		}
		dst = append(dst, `{"agent":"`...)
		dst = append(dst, it.Agent...)
		dst = append(dst, `","hash":"`...)
		dst = append(dst, it.Hash...)
		return append(dst, `"}`...), true
	})
}

// appendHeartbeats appends a batch of heartbeats as encoding/json writes
// it, {"items":[{"agent":"…","appliedHash":"…","nginxUp":…,"at":…},…]}
// (the hash left out when empty), when no agent or hash needs escaping.
// A relay forwards every agent's heartbeats in them: 3,333 a second at
// 50,000 agents.
func appendHeartbeats(dst []byte, hbs *Heartbeats) ([]byte, bool) {
	return appendItems(dst, hbs.Items, func(dst []byte, it *AgentHeartbeat) ([]byte, bool) {
		if !plainToken(it.Agent) || !plainToken(it.AppliedHash) {
			return dst, false
		}
		dst = append(dst, `{"agent":"`...)
		dst = append(dst, it.Agent...)
		dst = append(dst, '"')
		if it.AppliedHash != "" {
			dst = append(dst, `,"appliedHash":"`...)
			dst = append(dst, it.AppliedHash...)
			dst = append(dst, '"')
		}
		dst = append(dst, `,"nginxUp":`...)
		dst = strconv.AppendBool(dst, it.NginxUp)
		dst = append(dst, `,"at":`...)
		dst = strconv.AppendInt(dst, it.At, 10)
		return append(dst, '}'), true
	})
}

// appendItems appends {"items":[…]} with each item written by item; false,
// with dst as it was, when item refuses one or there are none
// (encoding/json writes a nil slice as null).
func appendItems[T any](dst []byte, items []T, item func([]byte, *T) ([]byte, bool)) ([]byte, bool) {
	if len(items) == 0 {
		return dst, false
	}
	start := len(dst)
	dst = append(dst, `{"items":[`...)
	for i := range items {
		if i > 0 {
			dst = append(dst, ',')
		}
		var ok bool
		if dst, ok = item(dst, &items[i]); !ok {
			return dst[:start], false
		}
	}
	return append(dst, `]}`...), true
}

// decodeFast decodes header, of a frame of type t, with the decoders
// below; false when none takes it.
func decodeFast(t Type, header []byte) (Message, bool) {
	switch t {
	case TypeHeartbeat:
		if hb, ok := decodeHeartbeat(header); ok {
			return hb, true
		}
	case TypeResult:
		if res, ok := decodeResult(header); ok {
			return res, true
		}
	case TypeBundleDelta:
		if d, ok := decodeBundleDelta(header); ok {
			return d, true
		}
	case TypeResults:
		if rs, ok := decodeResults(header); ok {
			return rs, true
		}
	case TypeDesired:
		if d, ok := decodeDesired(header); ok {
			return d, true
		}
	case TypeHeartbeats:
		if hbs, ok := decodeHeartbeats(header); ok {
			return hbs, true
		}
	}
	return nil, false
}

// decodeHeartbeat decodes a Heartbeat header in exactly the form
// appendHeartbeat gives it. Heartbeats are nearly all a relay reads
// (50,000 agents every 15 s); encoding/json cost it a seventh of its CPU
// and most of its garbage on them.
func decodeHeartbeat(h []byte) (*Heartbeat, bool) {
	rest, ok := bytes.CutPrefix(h, []byte(`{`))
	if !ok {
		return nil, false
	}
	hb := new(Heartbeat)
	if r, ok := bytes.CutPrefix(rest, []byte(`"appliedHash":"`)); ok {
		end := bytes.IndexByte(r, '"')
		if end <= 0 || !plainToken(r[:end]) {
			return nil, false
		}
		hb.AppliedHash = string(r[:end])
		if rest, ok = bytes.CutPrefix(r[end+1:], []byte(`,`)); !ok {
			return nil, false
		}
	}
	switch {
	case bytes.HasPrefix(rest, []byte(`"nginxUp":true,"seq":`)):
		hb.NginxUp, rest = true, rest[len(`"nginxUp":true,"seq":`):]
	case bytes.HasPrefix(rest, []byte(`"nginxUp":false,"seq":`)):
		rest = rest[len(`"nginxUp":false,"seq":`):]
	default:
		return nil, false
	}
	digits, ok := bytes.CutSuffix(rest, []byte(`}`))
	if !ok {
		return nil, false
	}
	if hb.Seq, ok = plainUint(digits, math.MaxUint64); !ok {
		return nil, false
	}
	return hb, true
}

// decodeResult decodes a Result header in the form appendResult gives a
// bundle applied, {"hash":"…","state":"applied"}, with ,"durationMs":…
// before the brace when not zero. A failure's result, with nginx's output,
// goes through encoding/json. In a push every agent sends one at once;
// encoding/json's reflection also grew the stack of the relay's goroutine
// that decoded it, twice, per agent.
func decodeResult(h []byte) (*Result, bool) {
	res := new(Result)
	rest, ok := parseApplied(h, res)
	if !ok || len(rest) != 0 {
		return nil, false
	}
	return res, true
}

// parseApplied parses an applied result, as decodeResult takes it, from
// the start of b into res, and returns what follows it.
func parseApplied(b []byte, res *Result) ([]byte, bool) {
	hash, rest, ok := plainString(b, `{"hash":"`)
	if !ok {
		return nil, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"state":"applied"`)); !ok {
		return nil, false
	}
	*res = Result{Hash: hash, State: ResultApplied}
	if r, ok := bytes.CutPrefix(rest, []byte(`,"durationMs":`)); ok {
		var ms uint64
		if ms, rest, ok = plainNumber(r, math.MaxInt64); !ok {
			return nil, false
		}
		res.DurationMs = int64(ms)
	}
	return bytes.CutPrefix(rest, []byte(`}`))
}

// decodeBundleDelta decodes a BundleDelta header in the form
// encoding/json gives it, {"hash":"…","base":"…","encoding":"…","size":…}:
// every agent reads one in a push.
func decodeBundleDelta(h []byte) (*BundleDelta, bool) {
	d := new(BundleDelta)
	var ok bool
	var rest []byte
	if d.Hash, rest, ok = plainString(h, `{"hash":"`); !ok {
		return nil, false
	}
	if d.Base, rest, ok = plainString(rest, `,"base":"`); !ok {
		return nil, false
	}
	if d.Encoding, rest, ok = plainString(rest, `,"encoding":"`); !ok {
		return nil, false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"size":`)); !ok {
		return nil, false
	}
	size, rest, ok := plainNumber(rest, math.MaxInt64)
	if !ok || !bytes.Equal(rest, []byte(`}`)) {
		return nil, false
	}
	d.Size = int64(size)
	return d, true
}

// decodeResults decodes a batch of applied results in the form
// appendResults gives it; the hub reads one per relay every few
// milliseconds of a push.
func decodeResults(h []byte) (*Results, bool) {
	items, ok := decodeItems(h, 2, func(b []byte) (it AgentResult, rest []byte, ok bool) {
		if it.Agent, rest, ok = plainString(b, `{"agent":"`); !ok {
			return it, nil, false
		}
		if rest, ok = bytes.CutPrefix(rest, []byte(`,"result":`)); !ok {
			return it, nil, false
		}
		if rest, ok = parseApplied(rest, &it.Result); !ok {
			return it, nil, false
		}
		rest, ok = bytes.CutPrefix(rest, []byte(`}`))
		return it, rest, ok
	})
	if !ok {
		return nil, false
	}
	return &Results{Items: items}, true
}

// decodeDesired decodes a batch of assignments in the form appendDesired
// gives it; every relay reads its agents' share of a push in them.
func decodeDesired(h []byte) (*Desired, bool) {
	items, ok := decodeItems(h, 1, func(b []byte) (it DesiredBundle, rest []byte, ok bool) {
		if it.Agent, rest, ok = plainString(b, `{"agent":"`); !ok {
			return it, nil, false
		}
		if it.Hash, rest, ok = plainString(rest, `,"hash":"`); !ok {
			return it, nil, false
		}
		rest, ok = bytes.CutPrefix(rest, []byte(`}`))
		return it, rest, ok
	})
	if !ok {
		return nil, false
	}
	return &Desired{Items: items}, true
}

// decodeHeartbeats decodes a batch of heartbeats in the form
// appendHeartbeats gives it, with a non-negative "at"; the hub reads every
// agent's heartbeats in them.
func decodeHeartbeats(h []byte) (*Heartbeats, bool) {
	items, ok := decodeItems(h, 1, func(b []byte) (it AgentHeartbeat, rest []byte, ok bool) {
		if it.Agent, rest, ok = plainString(b, `{"agent":"`); !ok {
			return it, nil, false
		}
		if r, ok := bytes.CutPrefix(rest, []byte(`,"appliedHash":"`)); ok {
			end := bytes.IndexByte(r, '"')
			if end <= 0 || !plainToken(r[:end]) {
				return it, nil, false // appendHeartbeats leaves an empty one out
			}
			it.AppliedHash, rest = string(r[:end]), r[end+1:]
		}
		switch {
		case bytes.HasPrefix(rest, []byte(`,"nginxUp":true,"at":`)):
			it.NginxUp, rest = true, rest[len(`,"nginxUp":true,"at":`):]
		case bytes.HasPrefix(rest, []byte(`,"nginxUp":false,"at":`)):
			rest = rest[len(`,"nginxUp":false,"at":`):]
		default:
			return it, nil, false
		}
		var at uint64
		if at, rest, ok = plainNumber(rest, math.MaxInt64); !ok {
			return it, nil, false
		}
		it.At = int64(at)
		rest, ok = bytes.CutPrefix(rest, []byte(`}`))
		return it, rest, ok
	})
	if !ok {
		return nil, false
	}
	return &Heartbeats{Items: items}, true
}

// decodeItems decodes {"items":[…]}, at least one item, each parsed by
// item from the start of what is left (every batch's items begin with
// their agent, which sizes the slice). objects is how many JSON objects
// an item holds: a batch over MaxObjects is left to encoding/json, which
// refuses it.
func decodeItems[T any](h []byte, objects int, item func([]byte) (T, []byte, bool)) ([]T, bool) {
	rest, ok := bytes.CutPrefix(h, []byte(`{"items":[`))
	if !ok {
		return nil, false
	}
	items := make([]T, 0, bytes.Count(rest, []byte(`{"agent":`)))
	for {
		var it T
		if it, rest, ok = item(rest); !ok {
			return nil, false
		}
		items = append(items, it)
		if 1+objects*len(items) > MaxObjects {
			return nil, false
		}
		if r, ok := bytes.CutPrefix(rest, []byte(`,`)); ok {
			rest = r
			continue
		}
		if !bytes.Equal(rest, []byte(`]}`)) {
			return nil, false
		}
		return items, true
	}
}

// plainString parses prefix, then a plainToken and its closing quote,
// from the start of b.
func plainString(b []byte, prefix string) (string, []byte, bool) {
	r, ok := bytes.CutPrefix(b, []byte(prefix))
	if !ok {
		return "", nil, false
	}
	end := bytes.IndexByte(r, '"')
	if end < 0 || !plainToken(r[:end]) {
		return "", nil, false
	}
	s := ""
	if end > 0 {
		s = string(r[:end])
	}
	return s, r[end+1:], true
}

// plainNumber parses the digits at the start of b as plainUint does, and
// returns what follows them.
func plainNumber(b []byte, limit uint64) (uint64, []byte, bool) {
	i := 0
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	n, ok := plainUint(b[:i], limit)
	return n, b[i:], ok
}

// plainToken reports whether b is made of letters, digits and ":-_.",
// which a JSON string holds as they are.
func plainToken[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == ':' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// plainUint parses a JSON number that is a non-negative integer of at
// most limit, written without sign, exponent or leading zeros; false for
// anything else, which encoding/json then decodes or refuses.
func plainUint(digits []byte, limit uint64) (uint64, bool) {
	if len(digits) == 0 || len(digits) > 20 || (digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	var n uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, false // over limit: encoding/json says why
		}
		n = n*10 + d
	}
	return n, true
}
