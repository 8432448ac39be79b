package nginx

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nxmesh/nxmesh/schema"
)

// defaultHSTSMaxAge is used when spec.tls.hsts is present with maxAge 0
// (one year, the value browsers' preload lists ask for).
const defaultHSTSMaxAge = 31536000

// hdr is one header rule. Rules are keyed by the lower-case name, so a
// later rule for the same header replaces an earlier one.
type hdr struct {
	name  string
	value string
	// field is the spec path of a user rule, "" for NxMesh's own rules,
	// whose name and value are constants written as they are.
	field string
}

type hdrSet map[string]hdr

func (s hdrSet) set(h hdr) { s[strings.ToLower(h.name)] = h }

// emit writes directive "name" "value" [suffix] for every rule, sorted by
// lower-case name so that output is deterministic.
func (s hdrSet) emit(e *emitter, directive string, suffix ...string) {
	for _, k := range slices.Sorted(maps.Keys(s)) {
		h := s[k]
		var name, value string
		if h.field == "" {
			name, value = strconv.Quote(h.name), h.value
		} else {
			name = e.tok(h.field, headerName, h.name)
			if h.value == "" {
				value = `""` // a removal
			} else {
				value = e.tok(h.field, quoteValue, h.value)
			}
		}
		e.line(directive, append([]string{name, value}, suffix...)...)
	}
}

// headerRules holds a scope's effective response rules.
type headerRules struct {
	add    hdrSet
	remove hdrSet
}

// apply layers rules from the spec at path p over r and returns the result;
// r is not modified.
func (r headerRules) apply(p string, h *schema.HeaderRules) headerRules {
	out := headerRules{add: maps.Clone(r.add), remove: maps.Clone(r.remove)}
	if out.add == nil {
		out.add = hdrSet{}
	}
	if out.remove == nil {
		out.remove = hdrSet{}
	}
	if h == nil {
		return out
	}
	for i, name := range h.Remove {
		delete(out.add, strings.ToLower(name))
		out.remove.set(hdr{name: name, field: fmt.Sprintf("%s.remove[%d]", p, i)})
	}
	for _, name := range slices.Sorted(maps.Keys(h.Add)) {
		delete(out.remove, strings.ToLower(name))
		out.add.set(hdr{name: name, value: h.Add[name], field: p + ".add." + name})
	}
	return out
}

// vhost writes the server blocks of one VirtualHost and records the
// upstreams and certificates it uses.
//
// Response header rules are written in full in the server block and in
// every location, because nginx's add_header in a location replaces all
// inherited ones rather than adding to them (so HSTS would silently vanish
// from a location that adds a header of its own).
//
// "remove" of a response header means proxy_hide_header in proxied
// locations: the header from the upstream is not passed on. nginx itself
// generates the headers of static and return responses (Server, Date,
// Content-Type, ...) and stock nginx cannot drop them, so remove has no
// effect there; Server is already reduced to "nginx" by server_tokens off.
func (c *compiler) vhost(e *emitter, name string, vh *schema.VirtualHostSpec, usedUp, usedCert map[string]bool) {
	e.raw(header)
	e.raw("# VirtualHost " + strconv.Quote(name) + "\n")
	vhostVar := e.tok("metadata.name", resourceName, name)

	var names []string
	for i, n := range vh.ServerNames {
		names = append(names, e.tok(fmt.Sprintf("spec.serverNames[%d]", i), serverName, n))
	}
	if len(names) == 0 {
		e.fail("spec.serverNames", errors.New("at least one server name is required"))
	}

	listens := vh.Listen
	if len(listens) == 0 {
		listens = []schema.Listen{{Port: 80}}
		if vh.TLS != nil {
			listens = append(listens, schema.Listen{Port: 443, TLS: true, HTTP2: true})
		}
	}
	var plain, secure []schema.Listen
	for _, l := range listens {
		if l.TLS {
			secure = append(secure, l)
		} else {
			plain = append(plain, l)
		}
	}
	if vh.TLS != nil && len(secure) == 0 {
		e.fail("spec.listen", errors.New("no listen has tls: true although spec.tls names a certificate"))
	}
	if vh.TLS == nil && len(secure) > 0 {
		e.fail("spec.listen", errors.New("a listen has tls: true but spec.tls names no certificate"))
	}
	main := listens
	if vh.TLS != nil && vh.TLS.RedirectHTTP {
		main = secure
		redirect := plain
		if len(redirect) == 0 {
			redirect = []schema.Listen{{Port: 80}}
		}
		e.open("server")
		c.listen(e, vh, redirect)
		e.line("server_name", names...)
		e.line("server_tokens", "off")
		e.line("set", "$nxmesh_vhost", vhostVar)
		target := "https://$host$request_uri"
		if p := secure[0].Port; p != 443 {
			target = "https://$host:" + strconv.Itoa(p) + "$request_uri"
		}
		e.line("return", "301", strconv.Quote(target))
		e.close()
		e.blank()
	}

	e.open("server")
	c.listen(e, vh, main)
	e.line("server_name", names...)
	e.line("server_tokens", "off")
	e.line("set", "$nxmesh_vhost", vhostVar)
	resp := headerRules{add: hdrSet{}, remove: hdrSet{}}
	if t := vh.TLS; t != nil {
		cert := e.tok("spec.tls.certificate", resourceName, t.Certificate)
		if e.err == nil && c.certs[t.Certificate] == nil {
			e.fail("spec.tls.certificate", fmt.Errorf("no Certificate named %s", shortQuote(t.Certificate)))
		}
		usedCert[t.Certificate] = true
		e.line("ssl_certificate", c.ref("certs/"+cert+".crt"))
		e.line("ssl_certificate_key", c.ref("certs/"+cert+".key"))
		e.line("ssl_protocols", "TLSv1.2", "TLSv1.3")
		e.line("ssl_session_cache", "shared:nxmesh_ssl:10m")
		if h := t.HSTS; h != nil {
			age := h.MaxAge
			if age == 0 {
				age = defaultHSTSMaxAge
			}
			v := "max-age=" + e.num("spec.tls.hsts.maxAge", age, 0, 63072000)
			if h.IncludeSubdomains {
				v += "; includeSubDomains"
			}
			if h.Preload {
				v += "; preload"
			}
			resp.add.set(hdr{name: "Strict-Transport-Security", value: strconv.Quote(v)})
		}
	}
	if vh.ClientMaxBodySize != "" {
		e.line("client_max_body_size", e.tok("spec.clientMaxBodySize", sizeOf, string(vh.ClientMaxBodySize)))
	}
	if vh.Headers != nil {
		if vh.Headers.Request != nil {
			e.fail("spec.headers.request", errors.New("request headers are set per location"))
		}
		resp = resp.apply("spec.headers.response", vh.Headers.Response)
	}
	resp.add.emit(e, "add_header", "always")
	if len(vh.Locations) == 0 {
		e.fail("spec.locations", errors.New("at least one location is required"))
	}
	for i := range vh.Locations {
		c.location(e, fmt.Sprintf("spec.locations[%d]", i), &vh.Locations[i], resp, usedUp)
	}
	e.close()
}

func sizeOf(s string) (string, error) { return size(s) }

// listen writes the listen directives. Only IPv4 "listen PORT" is written:
// nginx then listens on all IPv4 addresses.
func (c *compiler) listen(e *emitter, vh *schema.VirtualHostSpec, ls []schema.Listen) {
	for i, l := range ls {
		args := []string{e.num(fmt.Sprintf("spec.listen[%d].port", i), l.Port, 1, 65535)}
		if l.TLS {
			args = append(args, "ssl")
		}
		if l.HTTP2 {
			if !l.TLS {
				e.fail(fmt.Sprintf("spec.listen[%d].http2", i), errors.New("requires tls"))
			}
			args = append(args, "http2")
		}
		if l.DefaultServer {
			args = append(args, "default_server")
		}
		e.line("listen", args...)
	}
}

func (c *compiler) location(e *emitter, p string, loc *schema.Location, resp headerRules, usedUp map[string]bool) {
	var args []string
	switch loc.Match {
	case "", schema.MatchPrefix:
		args = []string{e.tok(p+".path", quotePath, loc.Path)}
	case schema.MatchExact:
		args = []string{"=", e.tok(p+".path", quotePath, loc.Path)}
	case schema.MatchRegex:
		args = []string{"~", e.tok(p+".path", quoteRegex, loc.Path)}
	default:
		e.fail(p+".match", fmt.Errorf("%s is not a match kind", shortQuote(string(loc.Match))))
	}
	e.open("location", args...)
	if loc.ClientMaxBodySize != "" {
		e.line("client_max_body_size", e.tok(p+".clientMaxBodySize", sizeOf, string(loc.ClientMaxBodySize)))
	}
	actions := 0
	if loc.Upstream != "" {
		actions++
	}
	if loc.Return != nil {
		actions++
	}
	if loc.Static != nil {
		actions++
	}
	if actions != 1 {
		e.fail(p, errors.New("exactly one of upstream, return or static is required"))
	}
	var rules *schema.Headers
	if loc.Headers != nil {
		rules = loc.Headers
	} else {
		rules = &schema.Headers{}
	}
	if loc.Upstream == "" && (rules.Request != nil || loc.WebSocket || loc.RewritePrefix != "" || loc.Timeouts != nil) {
		e.fail(p, errors.New("request headers, websocket, rewritePrefix and timeouts are allowed only with upstream"))
	}
	r := resp.apply(p+".headers.response", rules.Response)

	switch {
	case loc.Upstream != "":
		c.proxy(e, p, loc, rules.Request, usedUp)
		r.remove.emit2(e, "proxy_hide_header")
	case loc.Return != nil:
		c.ret(e, p+".return", loc.Return)
	case loc.Static != nil:
		c.static(e, p+".static", loc.Static)
	}
	r.add.emit(e, "add_header", "always")
	e.close()
}

// emit2 writes directive "name" for every rule (proxy_hide_header).
func (s hdrSet) emit2(e *emitter, directive string) {
	for _, k := range slices.Sorted(maps.Keys(s)) {
		h := s[k]
		e.line(directive, e.tok(h.field, headerName, h.name))
	}
}

func (c *compiler) proxy(e *emitter, p string, loc *schema.Location, req *schema.HeaderRules, usedUp map[string]bool) {
	upName := e.tok(p+".upstream", upstreamName, loc.Upstream)
	r := c.upstreams[loc.Upstream]
	if e.err != nil {
		return
	}
	if r == nil {
		e.fail(p+".upstream", fmt.Errorf("no Upstream named %s", shortQuote(loc.Upstream)))
		return
	}
	usedUp[loc.Upstream] = true
	up := r.Spec.(*schema.UpstreamSpec)

	target := "http://" + upName
	if loc.RewritePrefix != "" {
		if loc.Match == schema.MatchRegex {
			e.fail(p+".rewritePrefix", errors.New("is not allowed with a regex location"))
		}
		// proxy_pass with a URI replaces the part of the request URI that
		// matched the location with it.
		if _, err := quotePath(loc.RewritePrefix); err != nil {
			e.fail(p+".rewritePrefix", fmt.Errorf("%s %w", shortQuote(loc.RewritePrefix), err))
		}
		target += loc.RewritePrefix
	}
	e.line("proxy_pass", e.tok(p+".upstream", quoteLiteral, target))

	hs := hdrSet{}
	hs.set(hdr{name: "Host", value: "$host"})
	hs.set(hdr{name: "X-Real-IP", value: "$remote_addr"})
	hs.set(hdr{name: "X-Forwarded-For", value: "$proxy_add_x_forwarded_for"})
	hs.set(hdr{name: "X-Forwarded-Proto", value: "$scheme"})
	if loc.WebSocket || up.Keepalive > 0 {
		e.line("proxy_http_version", "1.1")
	}
	switch {
	case loc.WebSocket:
		hs.set(hdr{name: "Upgrade", value: "$http_upgrade"})
		hs.set(hdr{name: "Connection", value: "$nxmesh_connection_upgrade"})
	case up.Keepalive > 0:
		// An empty Connection header keeps upstream connections open.
		hs.set(hdr{name: "Connection", value: `""`})
	}
	if req != nil {
		for i, name := range req.Remove {
			hs.set(hdr{name: name, field: fmt.Sprintf("%s.headers.request.remove[%d]", p, i)})
		}
		for _, name := range slices.Sorted(maps.Keys(req.Add)) {
			v := req.Add[name]
			if v == "" {
				e.fail(p+".headers.request.add."+name, errors.New("must not be empty; use remove"))
			}
			hs.set(hdr{name: name, value: v, field: p + ".headers.request.add." + name})
		}
	}
	hs.emit(e, "proxy_set_header")

	if t := loc.Timeouts; t != nil {
		if t.Connect != "" {
			e.line("proxy_connect_timeout", e.tok(p+".timeouts.connect", duration, string(t.Connect)))
		}
		if t.Read != "" {
			e.line("proxy_read_timeout", e.tok(p+".timeouts.read", duration, string(t.Read)))
		}
		if t.Send != "" {
			e.line("proxy_send_timeout", e.tok(p+".timeouts.send", duration, string(t.Send)))
		}
	}
	if rt := up.Retries; rt != nil {
		// Errors here are the Upstream's, but they surface while compiling
		// the location; the field says where.
		uf := "upstream " + strconv.Quote(loc.Upstream) + " spec.retries"
		if len(rt.On) > 0 {
			var conds []string
			for i, on := range rt.On {
				conds = append(conds, e.tok(fmt.Sprintf("%s.on[%d]", uf, i), retryCondition, on))
			}
			e.line("proxy_next_upstream", conds...)
		}
		if rt.Tries > 0 {
			e.line("proxy_next_upstream_tries", e.num(uf+".tries", rt.Tries, 0, 100))
		}
		if rt.Timeout != "" {
			e.line("proxy_next_upstream_timeout", e.tok(uf+".timeout", duration, string(rt.Timeout)))
		}
	}
}

func (c *compiler) ret(e *emitter, p string, r *schema.Return) {
	status := e.num(p+".status", r.Status, 200, 599)
	switch {
	case r.URL != "" && r.Body != "":
		e.fail(p, errors.New("body and url cannot both be set"))
	case r.URL != "":
		switch r.Status {
		case 301, 302, 303, 307, 308:
		default:
			e.fail(p+".url", errors.New("allowed only with status 301, 302, 303, 307 or 308"))
		}
		e.line("return", status, e.tok(p+".url", quoteValue, r.URL))
	case r.Body != "":
		e.line("default_type", "text/plain")
		e.line("return", status, e.tok(p+".body", quoteBody, r.Body))
	default:
		e.line("return", status)
	}
}

func (c *compiler) static(e *emitter, p string, s *schema.Static) {
	root := e.tok(p+".root", quoteFSPath, s.Root)
	if e.err == nil && !underAny(s.Root, c.opts.StaticRoots) {
		e.fail(p+".root", fmt.Errorf("%s is outside the allowed static roots %s", shortQuote(s.Root), strings.Join(c.opts.StaticRoots, ", ")))
	}
	e.line("root", root)
	if len(s.Index) > 0 {
		var idx []string
		for i, n := range s.Index {
			idx = append(idx, e.tok(fmt.Sprintf("%s.index[%d]", p, i), quoteFileName, n))
		}
		e.line("index", idx...)
	}
}

// underAny reports whether dir is one of bases or lies below one of them.
// Both are clean absolute paths (checked by quoteFSPath).
func underAny(dir string, bases []string) bool {
	for _, b := range bases {
		if dir == b || b == "/" || strings.HasPrefix(dir, b+"/") {
			return true
		}
	}
	return false
}

// upstream writes one upstream block. Balancing comes first: nginx requires
// the method before keepalive.
func (c *compiler) upstream(e *emitter, name string, up *schema.UpstreamSpec) {
	e.raw(header)
	e.raw("# Upstream " + strconv.Quote(name) + "\n")
	e.open("upstream", e.tok("metadata.name", upstreamName, name))
	switch up.LoadBalancing {
	case "", schema.RoundRobin:
		if up.HashKey != "" {
			e.fail("spec.hashKey", errors.New("allowed only when loadBalancing is hash"))
		}
	case schema.LeastConn:
		e.line("least_conn")
	case schema.IPHash:
		e.line("ip_hash")
	case schema.Hash:
		e.line("hash", e.tok("spec.hashKey", hashKey, up.HashKey), "consistent")
	case schema.RandomTwoLeastConn:
		e.line("random", "two", "least_conn")
	default:
		e.fail("spec.loadBalancing", fmt.Errorf("%s is not a balancing method", shortQuote(string(up.LoadBalancing))))
	}
	if len(up.Servers) == 0 {
		e.fail("spec.servers", errors.New("at least one server is required"))
	}
	for i, s := range up.Servers {
		p := fmt.Sprintf("spec.servers[%d]", i)
		args := []string{e.tok(p+".address", address, s.Address)}
		if s.Weight != 0 {
			args = append(args, "weight="+e.num(p+".weight", s.Weight, 1, 1000))
		}
		if s.MaxFails != nil {
			args = append(args, "max_fails="+e.num(p+".maxFails", *s.MaxFails, 0, 100))
		}
		if s.FailTimeout != "" {
			args = append(args, "fail_timeout="+e.tok(p+".failTimeout", duration, string(s.FailTimeout)))
		}
		if s.Backup {
			args = append(args, "backup")
		}
		if s.Down {
			args = append(args, "down")
		}
		e.line("server", args...)
	}
	if up.Keepalive > 0 {
		e.line("keepalive", e.num("spec.keepalive", up.Keepalive, 1, 10000))
	}
	e.close()
}
