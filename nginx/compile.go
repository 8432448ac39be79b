package nginx

import (
	"cmp"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/nxmesh/nxmesh/schema"
)

// Mode says what kind of tree Compile produces.
type Mode int

const (
	// Managed is a complete nginx configuration that the agent runs nginx
	// with (nginx -p RUN_DIR -c TREE/nginx.conf). It is the default.
	Managed Mode = iota
	// Include is only http{}-level files for an nginx the user runs: their
	// http {} block says include <IncludeRoot>/nxmesh.conf;.
	Include
)

// String returns "managed" or "include".
func (m Mode) String() string {
	switch m {
	case Managed:
		return "managed"
	case Include:
		return "include"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

// Defaults of Options.
const (
	DefaultStatusListen = "127.0.0.1:8765"
)

// DefaultStaticRoots are the directories static roots must lie under when
// Options.StaticRoots is empty.
var DefaultStaticRoots = []string{"/var/www", "/srv/www"}

// Bundle paths: a contract with the agent's apply pipeline.
const (
	MainFile      = "nginx.conf"             // Managed mode: the main configuration
	IncludeFile   = "nxmesh.conf"            // Include mode: the one file users include
	LogFormatFile = "nxmesh/log_format.conf" // log_format nxmesh_json
	MapsFile      = "nxmesh/maps.conf"       // http-level maps NxMesh relies on
	MimeTypesFile = "nxmesh/mime.types"      // Managed mode: the types {} map
	StatusFile    = "nxmesh/status.conf"     // the status server
)

// Options parameterise Compile for one agent. The zero value is usable:
// Managed mode, status server on DefaultStatusListen, static roots under
// DefaultStaticRoots, no user directive.
type Options struct {
	// Labels are the agent's labels; a VirtualHost is compiled in when its
	// spec.selector matches them (a missing selector matches every agent).
	Labels map[string]string
	// Mode is Managed (default) or Include.
	Mode Mode
	// StatusListen is the loopback address:port of the status server;
	// default DefaultStatusListen.
	StatusListen string
	// StaticRoots are the directories a static location's root must equal
	// or lie under; default DefaultStaticRoots.
	StaticRoots []string
	// IncludeRoot is, in Include mode only, the absolute directory where the
	// live tree will be (such as /var/lib/nxmesh/current). Include paths and
	// certificate paths are made absolute with it, since the user's nginx
	// resolves relative paths against its own configuration directory.
	IncludeRoot string
	// User, in Managed mode, is the argument of the user directive (the
	// account workers run as when nginx starts as root); empty omits it.
	User string
}

// CompileError is a value Compile refuses to write: it names the resource
// and the field. Err says what is wrong with the value.
type CompileError struct {
	Kind  schema.Kind
	Name  string
	Field string
	Err   error
}

// Error formats the error as `compile KIND "NAME": FIELD: problem`.
func (e *CompileError) Error() string {
	var b strings.Builder
	b.WriteString("compile")
	if e.Kind != "" {
		fmt.Fprintf(&b, " %s %s", e.Kind, shortQuote(e.Name))
	}
	if e.Field != "" {
		b.WriteString(": " + e.Field)
	}
	b.WriteString(": " + e.Err.Error())
	return b.String()
}

// Unwrap returns the underlying problem.
func (e *CompileError) Unwrap() error { return e.Err }

// shortQuote quotes a value for an error message, cut to 64 bytes.
func shortQuote(s string) string {
	if len(s) > 64 {
		cut := 64
		for cut > 0 && s[cut]&0xC0 == 0x80 {
			cut--
		}
		return strconv.Quote(s[:cut]) + "..."
	}
	return strconv.Quote(s)
}

// Compile turns a resource set into the bundle of nginx files for one agent.
//
// The set should have passed schema.ValidateSet; Compile still re-checks
// every value it writes with the token functions of quote.go and returns a
// *CompileError rather than write a value it cannot quote safely. The
// result is deterministic: the same set (in any order) and options give
// the same bytes and hash. Virtual hosts are written in name order, which
// also decides nginx's default server on a port where none says
// defaultServer: the first by name.
//
// Only virtual hosts whose selector matches opts.Labels are compiled, with
// the upstreams and certificates they reference; other resources are left
// out, so that agents with the same labels share a bundle.
func Compile(set []schema.Resource, opts Options) (*Bundle, error) {
	c, err := newCompiler(set, opts)
	if err != nil {
		return nil, err
	}
	return c.compile()
}

type compiler struct {
	opts      Options
	vhosts    []*schema.Resource
	upstreams map[string]*schema.Resource
	certs     map[string]*schema.Resource
}

func newCompiler(set []schema.Resource, opts Options) (*compiler, error) {
	if opts.StatusListen == "" {
		opts.StatusListen = DefaultStatusListen
	}
	if len(opts.StaticRoots) == 0 {
		opts.StaticRoots = DefaultStaticRoots
	}
	optErr := func(field string, err error) error {
		return &CompileError{Field: "options." + field, Err: err}
	}
	if _, err := listenAddr(opts.StatusListen); err != nil {
		return nil, optErr("StatusListen", fmt.Errorf("%s %w", shortQuote(opts.StatusListen), err))
	}
	for _, r := range opts.StaticRoots {
		if _, err := quoteFSPath(r); err != nil {
			return nil, optErr("StaticRoots", fmt.Errorf("%s %w", shortQuote(r), err))
		}
	}
	switch opts.Mode {
	case Managed:
		if opts.IncludeRoot != "" {
			return nil, optErr("IncludeRoot", errors.New("is only for include mode"))
		}
		if opts.User != "" {
			if _, err := userName(opts.User); err != nil {
				return nil, optErr("User", fmt.Errorf("%s %w", shortQuote(opts.User), err))
			}
		}
	case Include:
		if opts.IncludeRoot == "" {
			return nil, optErr("IncludeRoot", errors.New("is required in include mode"))
		}
		if _, err := quoteFSPath(opts.IncludeRoot); err != nil {
			return nil, optErr("IncludeRoot", fmt.Errorf("%s %w", shortQuote(opts.IncludeRoot), err))
		}
		if opts.User != "" {
			return nil, optErr("User", errors.New("is only for managed mode"))
		}
	default:
		return nil, optErr("Mode", fmt.Errorf("unknown mode %d", opts.Mode))
	}

	c := &compiler{opts: opts, upstreams: map[string]*schema.Resource{}, certs: map[string]*schema.Resource{}}
	seenVH := map[string]bool{}
	for i := range set {
		r := &set[i]
		var seen map[string]*schema.Resource
		switch s := r.Spec.(type) {
		case *schema.VirtualHostSpec:
			if s == nil {
				return nil, &CompileError{Kind: r.Kind, Name: r.Metadata.Name, Field: "spec", Err: errors.New("is missing")}
			}
			if seenVH[r.Metadata.Name] {
				return nil, &CompileError{Kind: r.Kind, Name: r.Metadata.Name, Field: "metadata.name", Err: errors.New("is used by two VirtualHosts")}
			}
			seenVH[r.Metadata.Name] = true
			if s.Selector.Matches(opts.Labels) {
				c.vhosts = append(c.vhosts, r)
			}
			continue
		case *schema.UpstreamSpec:
			seen = c.upstreams
			if s == nil {
				return nil, &CompileError{Kind: r.Kind, Name: r.Metadata.Name, Field: "spec", Err: errors.New("is missing")}
			}
		case *schema.CertificateSpec:
			seen = c.certs
			if s == nil {
				return nil, &CompileError{Kind: r.Kind, Name: r.Metadata.Name, Field: "spec", Err: errors.New("is missing")}
			}
		default:
			// Kinds this build does not compile (policies added later are
			// compiled by their own code); nothing to write.
			continue
		}
		if r.Kind != r.Spec.Kind() {
			return nil, &CompileError{Kind: r.Kind, Name: r.Metadata.Name, Field: "spec", Err: fmt.Errorf("holds a %s spec", r.Spec.Kind())}
		}
		if seen[r.Metadata.Name] != nil {
			return nil, &CompileError{Kind: r.Kind, Name: r.Metadata.Name, Field: "metadata.name", Err: fmt.Errorf("is used by two %ss", r.Kind)}
		}
		seen[r.Metadata.Name] = r
	}
	slices.SortFunc(c.vhosts, func(a, b *schema.Resource) int { return cmp.Compare(a.Metadata.Name, b.Metadata.Name) })
	return c, nil
}

func (c *compiler) compile() (*Bundle, error) {
	usedUp := map[string]bool{}
	usedCert := map[string]bool{}
	var files []File
	var vhostFiles, upstreamFiles []string
	for _, r := range c.vhosts {
		vh := r.Spec.(*schema.VirtualHostSpec)
		e := &emitter{kind: r.Kind, name: r.Metadata.Name}
		c.vhost(e, r.Metadata.Name, vh, usedUp, usedCert)
		name := e.tok("metadata.name", resourceName, r.Metadata.Name)
		if e.err != nil {
			return nil, e.err
		}
		p := "vhosts/" + name + ".conf"
		files = append(files, File{Path: p, Data: e.bytes()})
		vhostFiles = append(vhostFiles, p)
	}
	for _, name := range sortedSet(usedUp) {
		r := c.upstreams[name]
		e := &emitter{kind: r.Kind, name: name}
		c.upstream(e, name, r.Spec.(*schema.UpstreamSpec))
		if e.err != nil {
			return nil, e.err
		}
		p := "upstreams/" + name + ".conf"
		files = append(files, File{Path: p, Data: e.bytes()})
		upstreamFiles = append(upstreamFiles, p)
	}
	for _, name := range sortedSet(usedCert) {
		s := c.certs[name].Spec.(*schema.CertificateSpec)
		cert, key, err := pemFiles(s)
		if err != nil {
			return nil, &CompileError{Kind: schema.KindCertificate, Name: name, Field: "spec", Err: err}
		}
		files = append(files,
			File{Path: "certs/" + name + ".crt", Data: cert},
			File{Path: "certs/" + name + ".key", Data: key, Secret: true})
	}

	files = append(files,
		File{Path: LogFormatFile, Data: []byte(logFormatConf)},
		File{Path: MapsFile, Data: []byte(mapsConf)},
		File{Path: StatusFile, Data: c.statusConf()})
	includes := []string{LogFormatFile, MapsFile}
	if c.opts.Mode == Managed {
		files = append(files, File{Path: MimeTypesFile, Data: []byte(mimeTypes)})
		includes = append(includes, MimeTypesFile)
	}
	includes = append(includes, upstreamFiles...)
	includes = append(includes, vhostFiles...)
	includes = append(includes, StatusFile)
	if c.opts.Mode == Managed {
		files = append(files, File{Path: MainFile, Data: c.mainConf(includes)})
	} else {
		files = append(files, File{Path: IncludeFile, Data: c.includeConf(includes)})
	}
	return Seal(files)
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ref returns the token that names bundle file p from inside the tree:
// relative in Managed mode (nginx resolves include and ssl_certificate
// against the directory of the main file, so the same tree works from
// releases/<hash>/ and from current/), absolute under IncludeRoot in
// Include mode. p is built from checked names only.
func (c *compiler) ref(p string) string {
	if c.opts.Mode == Managed {
		return p
	}
	q, _ := quoteFSPath(path.Join(c.opts.IncludeRoot, p)) // IncludeRoot was checked
	return q
}

const header = "# Generated by NxMesh. Do not edit: the next change replaces this file.\n"

func (c *compiler) mainConf(includes []string) []byte {
	e := &emitter{}
	e.raw(header)
	if c.opts.User != "" {
		e.line("user", c.opts.User)
	}
	e.line("daemon", "off")
	e.line("master_process", "on")
	e.line("worker_processes", "auto")
	e.line("pid", "nginx.pid")
	e.line("error_log", "logs/error.log", "notice")
	e.blank()
	e.open("events")
	e.line("worker_connections", "1024")
	e.close()
	e.blank()
	e.open("http")
	// log_format must come before the access_log that names it.
	for _, p := range includes[:3] {
		e.line("include", c.ref(p))
	}
	e.line("default_type", "application/octet-stream")
	e.line("access_log", "logs/access.log", "nxmesh_json")
	e.line("client_body_temp_path", "tmp/body")
	e.line("proxy_temp_path", "tmp/proxy")
	e.line("fastcgi_temp_path", "tmp/fastcgi")
	e.line("uwsgi_temp_path", "tmp/uwsgi")
	e.line("scgi_temp_path", "tmp/scgi")
	e.line("server_tokens", "off")
	e.line("sendfile", "on")
	for _, p := range includes[3:] {
		e.line("include", c.ref(p))
	}
	e.close()
	return e.bytes()
}

func (c *compiler) includeConf(includes []string) []byte {
	e := &emitter{}
	e.raw(header)
	e.raw("# Include this file inside the http {} block of your nginx.conf:\n")
	e.raw("#   include " + path.Join(c.opts.IncludeRoot, IncludeFile) + ";\n")
	for _, p := range includes {
		e.line("include", c.ref(p))
	}
	return e.bytes()
}

func (c *compiler) statusConf() []byte {
	e := &emitter{}
	e.raw(header)
	e.raw("# The status server: loopback only, for the agent.\n")
	e.open("server")
	e.line("listen", c.opts.StatusListen) // checked by listenAddr
	e.line("server_name", "nxmesh-status")
	e.line("server_tokens", "off")
	e.line("access_log", "off")
	// Declares the log format's variable even when no vhost is compiled in.
	e.line("set", "$nxmesh_vhost", `""`)
	e.line("allow", "127.0.0.1")
	e.line("allow", "::1")
	e.line("deny", "all")
	e.open("location", "=", "/nxmesh/status")
	e.line("stub_status")
	e.close()
	e.line("include", c.ref(GenerationFile))
	e.close()
	return e.bytes()
}

// logFormatConf is NxMesh's access log format. $nxmesh_vhost is set in
// every server block to the VirtualHost's name, so the agent can count per
// resource rather than per Host header.
const logFormatConf = header + `log_format nxmesh_json escape=json '{"time":"$time_iso8601",'
    '"vhost":"$nxmesh_vhost","server_name":"$server_name","host":"$host",'
    '"status":$status,"request_time":$request_time,'
    '"upstream_response_time":"$upstream_response_time","upstream_addr":"$upstream_addr",'
    '"bytes":$body_bytes_sent,"method":"$request_method","uri":"$request_uri",'
    '"remote_addr":"$remote_addr","request_id":"$request_id"}';
`

// mapsConf holds the maps NxMesh's locations use. The variable names are
// prefixed so that, in Include mode, they cannot collide with the user's.
const mapsConf = header + `map $http_upgrade $nxmesh_connection_upgrade {
    default upgrade;
    "" close;
}
`

// mimeTypes is a small types {} map: Managed mode does not depend on files
// outside the bundle such as /etc/nginx/mime.types.
const mimeTypes = header + `types {
    text/html html htm;
    text/css css;
    text/plain txt;
    text/xml xml;
    text/csv csv;
    application/javascript js mjs;
    application/json json map;
    application/wasm wasm;
    application/pdf pdf;
    application/zip zip;
    application/gzip gz;
    image/png png;
    image/jpeg jpg jpeg;
    image/gif gif;
    image/webp webp;
    image/avif avif;
    image/svg+xml svg svgz;
    image/x-icon ico;
    font/woff woff;
    font/woff2 woff2;
    audio/mpeg mp3;
    video/mp4 mp4;
    video/webm webm;
}
`

// pemFiles returns the certificate and key files, each ending in a newline.
// PEM is not nginx syntax, but it must be text only.
func pemFiles(s *schema.CertificateSpec) (cert, key []byte, err error) {
	check := func(field, v string) ([]byte, error) {
		if v == "" {
			return nil, fmt.Errorf("%s is empty", field)
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; (c < ' ' || c >= 0x7f) && c != '\n' && c != '\r' && c != '\t' {
				return nil, fmt.Errorf("%s must be PEM text", field)
			}
		}
		if !strings.HasSuffix(v, "\n") {
			v += "\n"
		}
		return []byte(v), nil
	}
	if cert, err = check("certificate", s.Certificate); err != nil {
		return nil, nil, err
	}
	if key, err = check("privateKey", s.PrivateKey); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}
