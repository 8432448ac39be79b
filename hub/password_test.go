package hub

import (
	"strings"
	"testing"
)

func TestPasswordHash(t *testing.T) {
	h, err := hashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=3,p=2$") {
		t.Fatalf("hash %q is not argon2id in PHC format", h)
	}
	if strings.Contains(h, "correct horse") {
		t.Fatal("hash contains the password")
	}
	for _, tc := range []struct {
		name, password string
		want           bool
	}{
		{"right", "correct horse battery staple", true},
		{"wrong", "correct horse battery stapl", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, err := checkPassword(h, tc.password)
			if err != nil || ok != tc.want {
				t.Fatalf("checkPassword = %v, %v; want %v", ok, err, tc.want)
			}
		})
	}
	h2, _ := hashPassword("correct horse battery staple")
	if h2 == h {
		t.Fatal("two hashes of one password are equal: salt is not random")
	}
}

func TestPasswordHashMalformed(t *testing.T) {
	for _, bad := range []string{"", "plain", "$argon2id$v=19$m=0,t=3,p=2$c2FsdA$aGFzaA", "$argon2id$v=18$m=65536,t=3,p=2$c2FsdA$aGFzaA", "$bcrypt$x$y$z$w"} {
		if _, err := checkPassword(bad, "x"); err == nil {
			t.Errorf("checkPassword(%q) accepted a malformed hash", bad)
		}
	}
}

func TestSecretToken(t *testing.T) {
	tok, hash, err := newSecretToken("nxm_")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "nxm_") || len(tok) < 40 {
		t.Fatalf("token %q", tok)
	}
	if hashSecretToken(tok) != hash || strings.Contains(hash, tok) {
		t.Fatal("hash does not match its token")
	}
}
