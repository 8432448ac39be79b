package schema

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Validate checks one resource against the grammars and rules of its kind,
// without looking at other resources (see ValidateSet). It returns Errors
// listing every problem found (up to 50), naming r.Source when it is set.
func (r *Resource) Validate() error {
	l := &errorList{file: r.Source.File, doc: r.Source.Document}
	r.validate(l)
	return l.err()
}

// ValidateSet validates every resource of a set, then checks the rules
// between them: no two resources of the same kind share a name, every
// VirtualHost's spec.tls.certificate names a Certificate of the set, and
// every location's upstream names an Upstream of the set. file names the
// input for resources whose Source.File is empty.
func ValidateSet(file string, rs []Resource) error {
	l := &errorList{file: file}
	at := func(r *Resource) {
		l.file, l.doc = file, r.Source.Document
		if r.Source.File != "" {
			l.file = r.Source.File
		}
	}
	type key struct {
		kind Kind
		name string
	}
	first := make(map[key]*Resource, len(rs))
	for i := range rs {
		r := &rs[i]
		at(r)
		r.validate(l)
		k := key{r.Kind, r.Metadata.Name}
		if r.Metadata.Name == "" {
			continue
		}
		if prev, dup := first[k]; dup {
			where := ""
			if prev.Source.Document > 0 {
				where = fmt.Sprintf(" (first defined in document %d", prev.Source.Document)
				if prev.Source.File != "" && prev.Source.File != r.Source.File {
					where += " of " + prev.Source.File
				}
				where += ")"
			}
			l.add("metadata.name", "duplicate %s %s%s", r.Kind, quote(r.Metadata.Name), where)
			continue
		}
		first[k] = r
	}
	for i := range rs {
		r := &rs[i]
		vh, ok := r.Spec.(*VirtualHostSpec)
		if !ok || vh == nil {
			continue
		}
		at(r)
		if vh.TLS != nil && vh.TLS.Certificate != "" && first[key{KindCertificate, vh.TLS.Certificate}] == nil {
			l.add("spec.tls.certificate", "no Certificate named %s", quote(vh.TLS.Certificate))
		}
		for j, loc := range vh.Locations {
			if loc.Upstream != "" && first[key{KindUpstream, loc.Upstream}] == nil {
				l.add(index("spec.locations", j)+".upstream", "no Upstream named %s", quote(loc.Upstream))
			}
		}
	}
	return l.err()
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// validate adds r's problems to l.
func (r *Resource) validate(l *errorList) {
	if r.APIVersion != APIVersion {
		if r.APIVersion == "" {
			l.add("apiVersion", "required; must be %q", APIVersion)
		} else {
			l.add("apiVersion", "must be %q, got %s", APIVersion, quote(r.APIVersion))
		}
	}
	known := newSpec(r.Kind) != nil
	if !known {
		l.add("kind", "%s", unknownKind(r.Kind))
	}
	if e := nameError(r.Metadata.Name); e != "" {
		l.add("metadata.name", "%s", e)
	}
	validateLabels(l, "metadata.labels", r.Metadata.Labels)
	if !known {
		return
	}
	switch s := r.Spec.(type) {
	case nil:
		l.add("spec", "required")
	case *UpstreamSpec:
		s.validate(l)
	case *VirtualHostSpec:
		s.validate(l)
	case *CertificateSpec:
		s.validate(l)
	}
	if r.Spec != nil && r.Spec.Kind() != r.Kind {
		l.add("spec", "holds a %s spec but kind is %s", r.Spec.Kind(), r.Kind)
	}
}

func validateLabels(l *errorList, path string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		if e := labelKeyError(k); e != "" {
			l.add(joinKey(path, k), "%s", e)
		}
		if e := labelValueError(labels[k]); e != "" {
			l.add(joinKey(path, k), "%s", e)
		}
	}
}

// sortedKeys makes error order deterministic.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func validateDuration(l *errorList, path string, d Duration) {
	if d != "" && !durationRe.MatchString(string(d)) {
		l.add(path, "%s is not a valid duration; use 1 to 9 digits and a unit: ms, s, m, h or d (e.g. \"30s\")", quote(string(d)))
	}
}

func validateSize(l *errorList, path string, s Size) {
	if s != "" && !sizeRe.MatchString(string(s)) {
		l.add(path, "%s is not a valid size; use 1 to 9 digits and an optional unit k, m or g (e.g. \"10m\")", quote(string(s)))
	}
}

func validateRange(l *errorList, path string, v, lo, hi int) {
	if v < lo || v > hi {
		l.add(path, "must be from %d to %d, got %d", lo, hi, v)
	}
}

func (s *UpstreamSpec) validate(l *errorList) {
	switch n := len(s.Servers); {
	case n == 0:
		l.add("spec.servers", "at least one server is required")
	case n > 1024:
		l.add("spec.servers", "at most 1024 servers are allowed, got %d", n)
	}
	switch s.LoadBalancing {
	case "", RoundRobin, LeastConn, IPHash, Hash, RandomTwoLeastConn:
	default:
		l.add("spec.loadBalancing", "%s is not a balancing method; use %s, %s, %s, %s or %s",
			quote(string(s.LoadBalancing)), RoundRobin, LeastConn, IPHash, Hash, RandomTwoLeastConn)
	}
	switch {
	case s.LoadBalancing == Hash && s.HashKey == "":
		l.add("spec.hashKey", "required when loadBalancing is hash")
	case s.LoadBalancing != Hash && s.HashKey != "":
		l.add("spec.hashKey", "allowed only when loadBalancing is hash")
	case s.HashKey != "" && !hashKeyAllowed(s.HashKey):
		l.add("spec.hashKey", "%s is not allowed; use one of %s, $cookie_<name> or $arg_<name>", quote(s.HashKey), strings.Join(hashKeys, ", "))
	}
	// nginx: "backup ... cannot be used along with the hash, ip_hash, and
	// random load balancing methods" (ngx_http_upstream_module).
	noBackup := s.LoadBalancing == IPHash || s.LoadBalancing == Hash || s.LoadBalancing == RandomTwoLeastConn
	for i, srv := range s.Servers {
		p := index("spec.servers", i)
		if srv.Address == "" {
			l.add(p+".address", "required")
		} else if e := addressError(srv.Address); e != "" {
			l.add(p+".address", "%s", e)
		}
		if srv.Weight != 0 {
			validateRange(l, p+".weight", srv.Weight, 1, 1000)
		}
		if srv.MaxFails != nil {
			validateRange(l, p+".maxFails", *srv.MaxFails, 0, 100)
		}
		validateDuration(l, p+".failTimeout", srv.FailTimeout)
		if srv.Backup && srv.Down {
			l.add(p, "backup and down cannot both be set")
		}
		if srv.Backup && noBackup {
			l.add(p+".backup", "not allowed with loadBalancing %s (nginx forbids backup servers with hash, ip_hash and random)", s.LoadBalancing)
		}
	}
	validateRange(l, "spec.keepalive", s.Keepalive, 0, 10000)
	if r := s.Retries; r != nil {
		validateRange(l, "spec.retries.tries", r.Tries, 0, 100)
		validateDuration(l, "spec.retries.timeout", r.Timeout)
		seen := map[string]bool{}
		for i, c := range r.On {
			p := index("spec.retries.on", i)
			switch {
			case !slices.Contains(retryConditions, c):
				l.add(p, "%s is not a retry condition; use %s", quote(c), strings.Join(retryConditions, ", "))
			case seen[c]:
				l.add(p, "duplicate condition %s", quote(c))
			}
			seen[c] = true
		}
	}
}

func (s *VirtualHostSpec) validate(l *errorList) {
	switch n := len(s.ServerNames); {
	case n == 0:
		l.add("spec.serverNames", "at least one server name is required")
	case n > 64:
		l.add("spec.serverNames", "at most 64 server names are allowed, got %d", n)
	}
	names := map[string]bool{}
	for i, name := range s.ServerNames {
		p := index("spec.serverNames", i)
		if name == "_" {
			l.add(p, "\"_\" is not allowed (nginx's catch-all is not a name); use listen[].defaultServer to catch unmatched requests")
			continue
		}
		if e := hostnameError(name, true); e != "" {
			l.add(p, "%s", e)
			continue
		}
		lower := strings.ToLower(name)
		if names[lower] {
			l.add(p, "duplicate server name %s", quote(name))
		}
		names[lower] = true
	}

	ports := map[int]bool{}
	for i, ln := range s.Listen {
		p := index("spec.listen", i)
		validateRange(l, p+".port", ln.Port, 1, 65535)
		if ports[ln.Port] {
			l.add(p+".port", "duplicate port %d", ln.Port)
		}
		ports[ln.Port] = true
		if ln.HTTP2 && !ln.TLS {
			l.add(p+".http2", "allowed only with tls: true")
		}
		if ln.TLS && s.TLS == nil {
			l.add(p+".tls", "requires spec.tls to name a certificate")
		}
	}

	if t := s.TLS; t != nil {
		if e := nameError(t.Certificate); e != "" {
			l.add("spec.tls.certificate", "%s", e)
		}
		if t.HSTS != nil {
			validateRange(l, "spec.tls.hsts.maxAge", t.HSTS.MaxAge, 0, 63072000)
		}
	}

	switch n := len(s.Locations); {
	case n == 0:
		l.add("spec.locations", "at least one location is required")
	case n > 512:
		l.add("spec.locations", "at most 512 locations are allowed, got %d", n)
	}
	type key struct {
		match Match
		path  string
	}
	seen := map[key]int{}
	for i := range s.Locations {
		loc := &s.Locations[i]
		p := index("spec.locations", i)
		loc.validate(l, p)
		m := loc.Match
		if m == "" {
			m = MatchPrefix
		}
		k := key{m, loc.Path}
		if j, dup := seen[k]; dup {
			l.add(p+".path", "duplicate %s location %s (also spec.locations[%d])", m, quote(loc.Path), j)
		} else {
			seen[k] = i
		}
	}

	if s.Headers != nil {
		if s.Headers.Request != nil {
			l.add("spec.headers.request", "not allowed here; request headers are set per location that proxies to an upstream")
		}
		validateHeaderRules(l, "spec.headers.response", s.Headers.Response)
	}
	validateSize(l, "spec.clientMaxBodySize", s.ClientMaxBodySize)
	if s.Selector != nil {
		validateLabels(l, "spec.selector.matchLabels", s.Selector.MatchLabels)
	}
}

func (loc *Location) validate(l *errorList, p string) {
	switch {
	case loc.Path == "":
		l.add(p+".path", "required")
	case !strings.HasPrefix(loc.Path, "/") && loc.Match != MatchRegex:
		l.add(p+".path", "must start with \"/\"")
	case len(loc.Path) > maxPathLen:
		l.add(p+".path", "must be at most %d bytes", maxPathLen)
	default:
		switch loc.Match {
		case "", MatchPrefix, MatchExact:
			if !prefixPathRe.MatchString(loc.Path) {
				l.add(p+".path", "%s may contain only letters, digits, \"/\", %%XX escapes and - . _ ~ ! & ( ) * + , = : @", quote(loc.Path))
			}
		case MatchRegex:
			if e := regexPathError(loc.Path); e != "" {
				l.add(p+".path", "%s", e)
			}
		}
	}
	switch loc.Match {
	case "", MatchPrefix, MatchExact, MatchRegex:
	default:
		l.add(p+".match", "%s is not a match kind; use prefix, exact or regex", quote(string(loc.Match)))
	}

	var actions []string
	if loc.Upstream != "" {
		actions = append(actions, "upstream")
	}
	if loc.Return != nil {
		actions = append(actions, "return")
	}
	if loc.Static != nil {
		actions = append(actions, "static")
	}
	switch len(actions) {
	case 0:
		l.add(p, "exactly one of upstream, return or static is required, got none")
	case 1:
	default:
		l.add(p, "exactly one of upstream, return or static is allowed, got %s", strings.Join(actions, ", "))
	}

	if loc.Upstream != "" {
		if e := nameError(loc.Upstream); e != "" {
			l.add(p+".upstream", "%s", e)
		}
		if loc.RewritePrefix != "" && !prefixPathRe.MatchString(loc.RewritePrefix) {
			l.add(p+".rewritePrefix", "%s must start with \"/\" and contain only letters, digits, \"/\", %%XX escapes and - . _ ~ ! & ( ) * + , = : @", quote(loc.RewritePrefix))
		}
		if loc.RewritePrefix != "" && loc.Match == MatchRegex {
			l.add(p+".rewritePrefix", "not allowed with a regex location")
		}
		if t := loc.Timeouts; t != nil {
			validateDuration(l, p+".timeouts.connect", t.Connect)
			validateDuration(l, p+".timeouts.read", t.Read)
			validateDuration(l, p+".timeouts.send", t.Send)
		}
	} else {
		if loc.RewritePrefix != "" {
			l.add(p+".rewritePrefix", "allowed only with upstream")
		}
		if loc.WebSocket {
			l.add(p+".websocket", "allowed only with upstream")
		}
		if loc.Timeouts != nil {
			l.add(p+".timeouts", "allowed only with upstream")
		}
		if loc.Headers != nil && loc.Headers.Request != nil {
			l.add(p+".headers.request", "allowed only with upstream")
		}
	}

	if r := loc.Return; r != nil {
		rp := p + ".return"
		validateRange(l, rp+".status", r.Status, 200, 599)
		redirect := slices.Contains(redirectStatuses, r.Status)
		switch {
		case r.Body != "" && r.URL != "":
			l.add(rp, "body and url cannot both be set")
		case r.URL != "" && !redirect:
			l.add(rp+".url", "allowed only with status 301, 302, 303, 307 or 308")
		case r.URL == "" && redirect:
			l.add(rp+".url", "required with redirect status %d", r.Status)
		}
		if r.URL != "" {
			if e := redirectURLError(r.URL); e != "" {
				l.add(rp+".url", "%s", e)
			}
		}
		if r.Body != "" {
			if e := bodyError(r.Body); e != "" {
				l.add(rp+".body", "%s", e)
			}
		}
	}

	if s := loc.Static; s != nil {
		sp := p + ".static"
		if s.Root == "" {
			l.add(sp+".root", "required")
		} else if e := staticRootError(s.Root); e != "" {
			l.add(sp+".root", "%s", e)
		}
		if len(s.Index) > 16 {
			l.add(sp+".index", "at most 16 entries are allowed")
		}
		for i, name := range s.Index {
			if !indexNameRe.MatchString(name) || name == "." {
				l.add(index(sp+".index", i), "%s is not a simple file name; use letters, digits, '.', '_' and '-', not starting with '.'", quote(name))
			}
		}
	}

	if loc.Headers != nil {
		validateHeaderRules(l, p+".headers.request", loc.Headers.Request)
		validateHeaderRules(l, p+".headers.response", loc.Headers.Response)
	}
	validateSize(l, p+".clientMaxBodySize", loc.ClientMaxBodySize)
}

// validateHeaderRules checks names and values; a header both added and
// removed is an error because the outcome would depend on directive order.
func validateHeaderRules(l *errorList, p string, h *HeaderRules) {
	if h == nil {
		return
	}
	if len(h.Add) > 64 {
		l.add(p+".add", "at most 64 headers are allowed")
	}
	if len(h.Remove) > 64 {
		l.add(p+".remove", "at most 64 headers are allowed")
	}
	added := map[string]bool{}
	for _, k := range sortedKeys(h.Add) {
		kp := joinKey(p+".add", k)
		if e := headerNameError(k); e != "" {
			l.add(kp, "%s", e)
			continue
		}
		lower := strings.ToLower(k)
		if added[lower] {
			l.add(kp, "duplicate header %s (names are case-insensitive)", quote(k))
		}
		added[lower] = true
		if e := headerValueError(h.Add[k]); e != "" {
			l.add(kp, "%s", e)
		}
	}
	removed := map[string]bool{}
	for i, k := range h.Remove {
		ip := index(p+".remove", i)
		if e := headerNameError(k); e != "" {
			l.add(ip, "%s", e)
			continue
		}
		lower := strings.ToLower(k)
		switch {
		case removed[lower]:
			l.add(ip, "duplicate header %s", quote(k))
		case added[lower]:
			l.add(ip, "header %s is both added and removed", quote(k))
		}
		removed[lower] = true
	}
}

// PEM limits: a chain is a few KiB; these bound parsing work.
const (
	maxCertificatePEM = 256 << 10
	maxCertificates   = 16
	maxPrivateKeyPEM  = 32 << 10
)

// validate checks the chain and key. Messages about privateKey never quote
// it or the parser's error, so key material cannot leak into logs or API
// responses.
func (s *CertificateSpec) validate(l *errorList) {
	leaf := s.validateChain(l)
	key := s.validateKey(l)
	if leaf == nil || key == nil {
		return
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		l.add("spec.privateKey", "does not match the public key of the first certificate")
	}
}

func (s *CertificateSpec) validateChain(l *errorList) *x509.Certificate {
	const p = "spec.certificate"
	if s.Certificate == "" {
		l.add(p, "required")
		return nil
	}
	if len(s.Certificate) > maxCertificatePEM {
		l.add(p, "must be at most %d bytes", maxCertificatePEM)
		return nil
	}
	blocks, e := pemBlocks(s.Certificate)
	if e != "" {
		l.add(p, "%s", e)
		return nil
	}
	if len(blocks) > maxCertificates {
		l.add(p, "at most %d certificates are allowed", maxCertificates)
		return nil
	}
	var leaf *x509.Certificate
	for i, b := range blocks {
		if b.Type != "CERTIFICATE" {
			l.add(p, "PEM block %d is %s; only CERTIFICATE blocks are allowed (leaf first, then intermediates)", i+1, quote(b.Type))
			return nil
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			l.add(p, "PEM block %d is not a valid X.509 certificate: %s", i+1, quote(err.Error()))
			return nil
		}
		if i == 0 {
			leaf = c
		}
	}
	return leaf
}

func (s *CertificateSpec) validateKey(l *errorList) crypto.Signer {
	const p = "spec.privateKey"
	const want = "must hold exactly one unencrypted PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) and nothing else"
	if s.PrivateKey == "" {
		l.add(p, "required")
		return nil
	}
	if len(s.PrivateKey) > maxPrivateKeyPEM {
		l.add(p, "must be at most %d bytes", maxPrivateKeyPEM)
		return nil
	}
	if strings.HasPrefix(s.PrivateKey, RedactedKeyPrefix) {
		l.add(p, "is the digest the API shows in place of a key, which is write-only: put the PEM private key in its place to apply this Certificate")
		return nil
	}
	blocks, e := pemBlocks(s.PrivateKey)
	if e != "" || len(blocks) != 1 {
		l.add(p, "%s", want)
		return nil
	}
	var key any
	var err error
	switch b := blocks[0]; b.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		l.add(p, "%s", want)
		return nil
	}
	if err != nil {
		l.add(p, "is not a valid %s block", blocks[0].Type)
		return nil
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		l.add(p, "holds a key type that cannot sign; use RSA, ECDSA or Ed25519")
		return nil
	}
	return signer
}

// pemBlocks splits s into PEM blocks, refusing anything but blocks and
// whitespace between them, and blocks with headers (encrypted keys). The
// message never quotes the input.
func pemBlocks(s string) ([]*pem.Block, string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' || c >= 0x7f) && c != '\n' && c != '\r' && c != '\t' {
			return nil, "must contain only PEM blocks (ASCII text)"
		}
	}
	var blocks []*pem.Block
	rest := []byte(s)
	for {
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) == 0 {
			break
		}
		if !bytes.HasPrefix(rest, []byte("-----BEGIN ")) {
			return nil, "must contain only PEM blocks and whitespace"
		}
		b, next := pem.Decode(rest)
		// pem.Decode skips a malformed block and returns a later one; the
		// consumed text must hold exactly the block we were given.
		if b == nil || bytes.Count(rest[:len(rest)-len(next)], []byte("-----BEGIN ")) != 1 {
			return nil, "holds a malformed PEM block"
		}
		if len(b.Headers) > 0 {
			return nil, "holds a PEM block with headers; encrypted keys are not supported"
		}
		blocks = append(blocks, b)
		rest = next
		if len(blocks) > maxCertificates {
			break
		}
	}
	if len(blocks) == 0 {
		return nil, "must contain at least one PEM block"
	}
	return blocks, ""
}
