#!/usr/bin/env bash
# Make a private certificate authority and a server certificate it signed,
# for a vcsim listening on 127.0.0.1, so that its clients verify it the way
# they must verify a real vCenter (vmware_ca_file), instead of not at all.
#
#   bash tools/vcsim/tls.sh DIR
#
# DIR (made 0700 when missing) receives:
#   ca.pem        the CA's certificate: what clients trust (vmware_ca_file)
#   ca-key.pem    the CA's private key (0600); only ever used here
#   vcsim.pem     the server certificate (CN vcsim, SAN IP:127.0.0.1,
#                 DNS:localhost), for vcsim's -tlscert
#   vcsim-key.pem its private key (0600), for vcsim's -tlskey
# The keys are EC P-256 (made in milliseconds); the certificates are valid
# for 30 days, enough for any deployment of this tooling. Files already
# there are kept. The last line printed is DIR.
set -eu -o pipefail
dir=${1:?usage: tls.sh DIR}
umask 077
mkdir -p "$dir"
chmod 0700 "$dir"
cd "$dir"

if [ ! -s ca.pem ] || [ ! -s ca-key.pem ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -nodes -keyout ca-key.pem -out ca.pem -days 30 -sha256 \
        -subj '/CN=cinder-vmdk-backup test CA' \
        -addext 'basicConstraints=critical,CA:TRUE,pathlen:0' \
        -addext 'keyUsage=critical,keyCertSign,cRLSign' \
        2>/dev/null
    rm -f vcsim.pem vcsim-key.pem
fi
if [ ! -s vcsim.pem ] || [ ! -s vcsim-key.pem ]; then
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout vcsim-key.pem -out vcsim.csr -subj '/CN=vcsim' 2>/dev/null
    cat >vcsim.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid:always
EXT
    openssl x509 -req -in vcsim.csr -CA ca.pem -CAkey ca-key.pem \
        -CAcreateserial -out vcsim.pem -days 30 -sha256 \
        -extfile vcsim.ext 2>/dev/null
    rm -f vcsim.csr vcsim.ext ca.srl
fi
# Public parts readable by whoever may read DIR; keys by the owner only.
chmod 0600 ca-key.pem vcsim-key.pem
chmod 0644 ca.pem vcsim.pem
echo "$dir"
