# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""A stored backup and its chain, checked without restoring it.

Cinder's chunked backup drivers write, for every backup, the data objects
(each with its offset, length, compression and the md5 of its data in the
backup's ``_metadata``) and a ``_sha256file`` listing one SHA-256 per hash
block of the volume. Cinder never reads them back to check anything: a
restore of a damaged object writes the damage onto the volume.
:func:`verify` checks all of it for one backup and every backup of its
chain (its parents), without writing anything anywhere:

* **the objects**: every object each ``_metadata`` lists is read through
  the driver's own ``get_object_reader`` (the sha256 file too), inflated
  as a stream (:mod:`~cinder_vmdk_backup.backup.object_stream`'s decoders),
  its length and md5 checked against its entry, and every hash block of
  its data against the digest the sha256 file of the backup that wrote it
  has for that block; objects on the store that no ``_metadata`` lists are
  reported too (Cinder's restore refuses such a backup);
* **the chain**: for every block of the volume, the newest backup of the
  chain whose objects cover it must have, in its own sha256 file, the
  digest the requested backup's file has (blocks no object covers: the
  digest of zeros). With the first check, that proves that a restore of
  the requested backup gives the data its sha256 file describes;
* **deep** (optional): the backup is also restored with the driver's own
  ``restore()`` (Cinder's code, as a restore onto a new volume runs it)
  into a sparse scratch file of mode 0600 in ``[backup_verification]
  scratch_dir``, every block of which is then checked against the
  requested backup's digests; the file is removed on every path. A deep
  verification does not restore a backup whose objects already failed.

Memory stays bounded whatever the size: objects are inflated in pieces
(except ``zstd`` objects, which the ``zstd`` module inflates whole, and
stores whose object readers read whole objects), and the digest lists are
parsed as they are read
(:class:`~cinder_vmdk_backup.backup.sha_lists.ShaFileReader`), never held.
Swift's object reader reads whole objects (``read()`` takes no size): the
verification reads Swift's objects and sha256 files through the same
connection in pieces instead (:class:`_SwiftPieces`).

Reading and hashing run on a native thread of the plugin's
:mod:`~cinder_vmdk_backup.backup.transfer` (they log nothing and touch no
database, as Cinder asks of object readers); the caller's thread reads
the metadata, reports progress and asks whether to stop in between.

What is about the backup is a *problem* in the :class:`Report` (the
verification ran; the backup failed it). What is not (the store cannot be
reached, a credential refused, a metadata format this code does not know)
raises :class:`~cinder_vmdk_backup.exception.VerificationError`: a
verification that could not run says nothing about the backup.
"""

import collections
import contextlib
import copy
import hashlib
import itertools
import json
import os
import socket
import time
import uuid

from cinder import exception
from cinder.i18n import _
from cinder import objects
from cinder.objects import fields
from oslo_config import cfg
from oslo_utils import units

from cinder_vmdk_backup.backup import chain_reader
from cinder_vmdk_backup.backup import object_stream
from cinder_vmdk_backup.backup import sha_lists
from cinder_vmdk_backup.backup import transfer
from cinder_vmdk_backup.backup import zero_objects
from cinder_vmdk_backup import exception as cvb_exception
from cinder_vmdk_backup import opts

CONF = cfg.CONF
CONF.register_opts(opts.verification_opts, group='backup_verification')

#: Why a part of a backup failed its verification.
MISSING = 'missing'
TRUNCATED = 'truncated'
TOO_LONG = 'too_long'
UNDECODABLE = 'undecodable'
MD5_MISMATCH = 'md5_mismatch'
DIGEST_MISMATCH = 'digest_mismatch'
SHA256_FILE_MISSING = 'sha256_file_missing'
SHA256_FILE_INVALID = 'sha256_file_invalid'
METADATA_MISSING = 'metadata_missing'
PARENT_MISSING = 'parent_missing'
REASONS = (MISSING, TRUNCATED, TOO_LONG, UNDECODABLE, MD5_MISMATCH,
           DIGEST_MISMATCH, SHA256_FILE_MISSING, SHA256_FILE_INVALID,
           METADATA_MISSING, PARENT_MISSING)

#: Bytes inflated between two reports to the caller's thread (progress,
#: cancel).
TICK_BYTES = 32 * units.Mi
#: Bytes of the scratch file read at a time (deep).
READ_BYTES = object_stream.READ_BYTES
#: Pieces of an object that may wait for its md5.
MD5_PENDING = object_stream.MD5_PENDING
#: The restore method of the only backup format this code knows.
SUPPORTED_RESTORE = chain_reader.SUPPORTED_RESTORE

_ZERO = bytes(READ_BYTES)


class Cancelled(Exception):
    """The caller's ``cancelled()`` said to stop."""


class Report(object):
    """The outcome of a verification that ran.

    :ivar ok: no problem found
    :ivar backup_id: the requested backup
    :ivar chain: ids of the backups read, the full one first
    :ivar problems: dicts with ``backup_id``, ``object`` (name or None),
        ``offset``, ``length`` (of the volume) and ``reason`` (one of
        :data:`REASONS`); ``detail`` says more, for the log
    :ivar regions: merged ``(offset, length)`` ranges of the volume whose
        restored data cannot be trusted
    """

    def __init__(self, backup_id):
        self.backup_id = backup_id
        self.chain = []
        self.objects_checked = 0
        self.bytes_checked = 0
        self.blocks_checked = 0
        self.problems = []
        self.regions = []
        self.elapsed = 0.0
        self.deep = False
        self.restored = False
        self.size = 0
        self._spans = []

    @property
    def ok(self):
        return not self.problems

    def add(self, backup_id, reason, offset, length, obj=None, detail=None,
            region=True):
        """Add a problem; ``region`` False: its range adds no region."""
        self.problems.append({'backup_id': backup_id, 'object': obj,
                              'offset': int(offset), 'length': int(length),
                              'reason': reason, 'detail': detail})
        if region:
            self._spans.append((int(offset), int(length)))

    def summary(self):
        """One line for people."""
        checked = _('%(backups)d backup(s), %(objects)d object(s), '
                    '%(mib).1f MiB, %(blocks)d block(s) checked%(deep)s '
                    'in %(secs).1f s') % {
                        'backups': len(self.chain),
                        'objects': self.objects_checked,
                        'mib': self.bytes_checked / units.Mi,
                        'blocks': self.blocks_checked,
                        'deep': _(' and restored') if self.restored else '',
                        'secs': self.elapsed}
        if self.ok:
            return _('ok: %s') % checked
        reasons = sorted({p['reason'] for p in self.problems})
        regions = ', '.join('%d+%d' % region for region in self.regions[:4])
        if len(self.regions) > 4:
            regions += ', ...'
        return _('failed: %(count)d problem(s) (%(reasons)s); volume '
                 'regions %(regions)s; %(checked)s') % {
                     'count': len(self.problems),
                     'reasons': ', '.join(reasons),
                     'regions': regions or '-', 'checked': checked}

    def as_dict(self):
        return {'ok': self.ok, 'backup_id': self.backup_id,
                'chain': list(self.chain),
                'objects_checked': self.objects_checked,
                'bytes_checked': self.bytes_checked,
                'blocks_checked': self.blocks_checked,
                'problems': [dict(p) for p in self.problems],
                'regions': [list(r) for r in self.regions],
                'elapsed': self.elapsed}


def verify(service, backup, deep=False, progress=None, cancelled=None):
    """Check a stored backup and its chain; see the module's text.

    :param service: the backup service (one of Cinder's chunked drivers)
    :param backup: the Backup to verify
    :param deep: also restore it into a scratch file and check that
    :param progress: called with a percentage (0-100) now and then, on the
        caller's thread
    :param cancelled: called now and then on the caller's thread; True
        stops the verification (:class:`Cancelled`)
    :returns: a :class:`Report`
    :raises VerificationError: the verification could not run
    :raises Cancelled: ``cancelled()`` said so
    """
    started = time.monotonic()
    # Reads the store the way the streaming restore does, through the
    # chunked driver internals kept in cinder_internals (group
    # chain_reader): a Cinder that changed them cannot be verified.
    why = chain_reader.unusable_because(service)
    if why:
        raise cvb_exception.VerificationError(reason=why)
    run = _Verification(service, backup, progress, cancelled)
    report = run.report
    report.deep = bool(deep)
    run.prepare()
    run.on_native_thread(run.check_members)
    if run.composable():
        run.on_native_thread(run.check_composition)
    run.add_whole_volume_problems()
    if deep and report.ok:
        run.deep()
    report.regions = _regions(report._spans, report.size)
    report.elapsed = time.monotonic() - started
    return report


class _Member(object):
    """One backup of the chain: its metadata, objects, sha256 file."""

    def __init__(self, level, backup):
        self.level = level
        self.backup = backup
        self.metadata = None
        self.objects = []
        self.present = set()
        self.sha_name = None
        self.sha_ok = False
        self.chunk_size = None


def _is_not_found(exc):
    """Whether a store error says the object does not exist."""
    if isinstance(exc, FileNotFoundError):
        return True
    if getattr(exc, 'http_status', None) == 404:  # swiftclient
        return True
    resp = getattr(exc, 'resp', None)  # googleapiclient
    if getattr(resp, 'status', None) in (404, '404'):
        return True
    response = getattr(exc, 'response', None)  # botocore
    if isinstance(response, dict):
        code = (response.get('Error') or {}).get('Code')
        return code in ('NoSuchKey', 'NotFound', '404')
    return False


def _is_store_error(exc):
    """Whether an error while reading is the store's, not the data's.

    Connection failures and HTTP answers other than "not found" (swift,
    s3, gcs clients) say nothing about the backup's data.
    """
    if _is_not_found(exc):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError,
                        exception.BackupDriverException)):
        # (Cinder's drivers wrap their connection and API failures in
        # BackupDriverException: SwiftConnectionFailed, S3ClientError...)
        return True
    if getattr(exc, 'http_status', None) is not None:  # swiftclient
        return True
    if getattr(getattr(exc, 'resp', None), 'status', None) is not None:
        return True
    return isinstance(getattr(exc, 'response', None), dict)  # botocore


def _swift_reader_class():
    try:
        from cinder.backup.drivers import swift
    except ImportError:  # pragma: no cover - swiftclient is Cinder's
        return None
    return swift.SwiftBackupDriver.SwiftObjectReader


class _SwiftPieces(object):
    """A Swift object read in pieces, through the reader's connection.

    Cinder's ``SwiftObjectReader.read()`` returns the whole object (up to
    ``backup_swift_object_size``; a sha256 file grows with the volume).
    This one asks the same connection, with the same headers, for the
    object's body in pieces of :data:`READ_BYTES` (swiftclient's
    ``resp_chunk_size``; its retrying body resumes a broken transfer from
    where it stopped). Errors are the reader's: a missing object is
    swiftclient's ``ClientException`` with ``http_status`` 404, a socket
    error becomes ``SwiftConnectionFailed``; so does a transfer that
    breaks beyond swiftclient's retries (a store failure, not the data's).
    """

    def __init__(self, reader):
        self._reader = reader
        self._body = None

    def _open(self):
        reader = self._reader
        headers = reader.headers_func() if reader.headers_func else None
        try:
            _headers, body = reader.conn.get_object(
                reader.container, reader.object_name, headers=headers,
                resp_chunk_size=READ_BYTES)
        except socket.error as err:
            raise exception.SwiftConnectionFailed(reason=err)
        if isinstance(body, bytes):
            # (A client or fake that ignores resp_chunk_size.)
            body = _BytesBody(body)
        return body

    def read(self, size=-1):
        if self._body is None:
            self._body = self._open()
        try:
            if size is None or size < 0:
                return b''.join(iter(lambda: self._body.read(READ_BYTES),
                                     b''))
            return self._body.read(size)
        except exception.BackupDriverException:
            raise
        except Exception as err:
            if _is_not_found(err) or getattr(err, 'http_status', None):
                raise
            raise exception.SwiftConnectionFailed(reason=err) from err

    def close(self):
        body, self._body = self._body, None
        close = getattr(body, 'close', None)
        if close is not None:
            with contextlib.suppress(Exception):
                close()


class _BytesBody(object):

    def __init__(self, data):
        self._data = memoryview(data)
        self._at = 0

    def read(self, size):
        piece = bytes(self._data[self._at:self._at + size])
        self._at += len(piece)
        return piece


def _in_pieces(reader):
    """``reader``, or one reading in pieces where it reads whole objects."""
    swift_reader = _swift_reader_class()
    if swift_reader is not None and isinstance(reader, swift_reader):
        return _SwiftPieces(reader)
    return reader


def _close(reader):
    if isinstance(reader, _SwiftPieces):
        reader.close()


class _Digests(object):
    """One sha256 file's digests, taken by ascending block index."""

    def __init__(self, service, member):
        self.error = None
        #: The file was gone when read (after its listing, or midway).
        self.missing = False
        self._name = member.sha_name
        self._backup_id = member.backup.id
        self._manager = None
        self._reader = None
        self._iter = iter(())
        self._next = 0
        self.count = None
        try:
            self._manager = service.get_object_reader(
                member.backup.container, member.sha_name)
            self._reader = _in_pieces(self._manager.__enter__())
            sha = sha_lists.ShaFileReader(self._reader,
                                          member.sha_name).open()
            self.chunk_size = sha.chunk_size()
            self._iter = sha.digests()
        except exception.InvalidBackup as exc:
            self.error = exc
            self.close()
        except Exception:
            self.close()
            raise

    def get(self, index):
        """The digest of block ``index`` (None past the end or on error)."""
        if self.error is not None or index < self._next:
            return None
        try:
            if index > self._next:
                skip = index - self._next
                taken = sum(1 for _x in itertools.islice(self._iter, skip))
                self._next += taken
                if taken < skip:
                    return None
            digest = next(self._iter, None)
        except exception.InvalidBackup as exc:
            self.error = exc
            return None
        except Exception as exc:
            self._read_failed(exc)
            return None
        if digest is not None:
            self._next += 1
        return digest

    def finish(self):
        """Read the rest; the number of digests (None on error)."""
        try:
            self._next += sum(1 for _x in self._iter)
        except exception.InvalidBackup as exc:
            self.error = exc
        except Exception as exc:
            self._read_failed(exc)
        self.close()
        if self.error is not None:
            return None
        return self._next

    def _read_failed(self, exc):
        """The store failed while the digests were read (after open).

        Not found: the file went away (``missing``); any other failure
        says nothing about the backup: VerificationError.
        """
        if _is_not_found(exc):
            self.error = exc
            self.missing = True
            return
        self.close()
        raise cvb_exception.VerificationError(reason=_(
            'the sha256 file %(n)s of backup %(b)s cannot be read: '
            '%(e)s') % {'n': self._name, 'b': self._backup_id,
                        'e': exc}) from exc

    def close(self):
        reader, self._reader = self._reader, None
        _close(reader)
        manager, self._manager = self._manager, None
        if manager is not None:
            with contextlib.suppress(Exception):
                manager.__exit__(None, None, None)


class _Verification(object):

    def __init__(self, service, backup, progress, cancelled):
        self.service = service
        self.backup = backup
        self.report = Report(backup.id)
        self._progress = progress
        self._cancelled = cancelled
        self.members = []
        self.broken = False
        self.size_known = True
        self._whole_volume = []
        self.done = 0
        self.total = 1

    def _error(self, reason):
        return cvb_exception.VerificationError(reason=reason)

    # -- on the caller's thread: the chain and its metadata -------------

    def prepare(self):
        chain = [self.backup]
        seen = {self.backup.id}
        current = self.backup
        missing_parent = None
        while current.parent_id:
            if current.parent_id in seen:
                missing_parent = (current.parent_id, _('the parents form a '
                                                       'loop'))
                break
            try:
                parent = objects.Backup.get_by_id(self.service.context,
                                                  current.parent_id)
            except exception.BackupNotFound:
                missing_parent = (current.parent_id, _('backup %s does not '
                                                       'exist') %
                                  current.parent_id)
                break
            seen.add(parent.id)
            chain.append(parent)
            current = parent
        chain.reverse()
        self.members = [_Member(level, b) for level, b in enumerate(chain)]
        self.report.chain = [b.id for b in chain]
        for member in self.members:
            self._read_member(member)
        # The volume's size: where the full backup's objects end (they
        # cover the volume); without it, where the requested backup's
        # digests end (see _check_count).
        full = self.members[0]
        self.size_known = not missing_parent and full.metadata is not None
        ends = [obj.end for m in self.members for obj in m.objects]
        self.report.size = size = max(ends) if ends else 0
        if missing_parent:
            self.broken = True
            self._whole(missing_parent[0], PARENT_MISSING,
                        detail=missing_parent[1])
        self.total = max(1, sum(obj.length for m in self.members
                                for obj in m.objects) +
                         (2 * size if self.report.deep else 0))

    def _read_member(self, member):
        service, backup = self.service, member.backup
        member.sha_name = service._sha256_filename(backup)
        meta_name = service._metadata_filename(backup)
        try:
            member.present = set(service._generate_object_names(backup))
        except Exception as exc:
            if not _is_not_found(exc):
                raise self._error(_('the objects of backup %(b)s cannot be '
                                    'listed: %(e)s') % {'b': backup.id,
                                                        'e': exc}) from exc
        try:
            metadata = service._read_metadata(backup)
        except Exception as exc:
            if not (_is_not_found(exc) or isinstance(exc, ValueError)):
                raise self._error(_('the metadata of backup %(b)s cannot '
                                    'be read: %(e)s') % {'b': backup.id,
                                                         'e': exc}) from exc
            self.broken = True
            self._whole(backup.id, METADATA_MISSING, obj=meta_name,
                        detail=str(exc))
            return
        restore = service.DRIVER_VERSION_MAPPING.get(metadata.get('version'))
        if restore != SUPPORTED_RESTORE:
            raise self._error(_('backup %(b)s has metadata version %(v)s, '
                                'which this verification cannot read') % {
                                    'b': backup.id,
                                    'v': metadata.get('version')})
        member.metadata = metadata
        extra = metadata.get('extra_metadata')
        listed = set()
        for entry in metadata.get('objects') or ():
            for name, info in entry.items():
                listed.add(name)
                member.objects.append(chain_reader._Object(
                    member.level, backup, name, info, extra))
        member.objects.sort(key=lambda o: o.offset)
        for name in sorted(member.present - listed -
                           {meta_name, member.sha_name}):
            self.report.add(backup.id, METADATA_MISSING, 0, 0, obj=name,
                            detail=_('the store holds this object, the '
                                     'metadata does not list it'))
        if member.sha_name not in member.present:
            self.broken = True
            self._whole(backup.id, SHA256_FILE_MISSING, obj=member.sha_name)

    # -- between the threads ------------------------------------------------

    def on_native_thread(self, work):
        """Run the generator ``work`` on a native thread; tick here."""
        with transfer.Ahead(work(), depth=1, name='cvb-verify') as ticks:
            for _tick in ticks:
                self.tick()
        self.tick()

    def tick(self):
        if self._cancelled is not None and self._cancelled():
            raise Cancelled()
        if self._progress is not None:
            self._progress(min(99, int(100 * self.done / self.total)))

    # -- on the native thread: objects and digests ----------------------

    def check_members(self):
        # The md5 of each object is taken on a thread of its own, beside
        # the inflating and the block digests (as object_stream does).
        self.hasher = transfer.NativeExecutor(1, name='cvb-verify-md5')
        try:
            yield from self._check_members()
        finally:
            self.hasher.shutdown(cancel_futures=True)

    def _check_members(self):
        for member in self.members:
            if member.metadata is None:
                continue
            digests = None
            if member.sha_name in member.present:
                digests = self._digests(member)
            try:
                for obj in member.objects:
                    yield from self._check_object(member, obj, digests)
                if digests is not None:
                    self._check_count(member, digests)
            finally:
                if digests is not None:
                    digests.close()

    def _digests(self, member):
        try:
            digests = _Digests(self.service, member)
        except Exception as exc:
            if _is_not_found(exc):
                self.broken = True
                self._whole(member.backup.id, SHA256_FILE_MISSING,
                            obj=member.sha_name)
                return None
            raise self._error(_('the sha256 file of backup %(b)s cannot be '
                                'read: %(e)s') % {'b': member.backup.id,
                                                  'e': exc}) from exc
        if digests.error is not None:
            self._sha_invalid(member, digests.error)
            return None
        member.chunk_size = digests.chunk_size
        if not member.chunk_size or member.chunk_size <= 0:
            self._sha_invalid(member, 'chunk_size %s' % member.chunk_size)
            digests.close()
            return None
        return digests

    def _sha_invalid(self, member, why):
        self.broken = True
        self._whole(member.backup.id, SHA256_FILE_INVALID,
                    obj=member.sha_name, detail=str(why))

    def _whole(self, backup_id, reason, obj=None, detail=None):
        """A problem of the whole volume (added once its size is known)."""
        self._whole_volume.append((backup_id, reason, obj, detail))

    def add_whole_volume_problems(self):
        for backup_id, reason, obj, detail in self._whole_volume:
            self.report.add(backup_id, reason, 0, self.report.size, obj=obj,
                            detail=detail)
        self._whole_volume = []

    def _check_count(self, member, digests):
        count = digests.finish()
        if count is None and digests.missing:
            self.broken = True
            self._whole(member.backup.id, SHA256_FILE_MISSING,
                        obj=member.sha_name, detail=str(digests.error))
            return
        if count is None:
            self._sha_invalid(member, digests.error)
            return
        if not self.size_known:
            self.report.size = max(self.report.size,
                                   count * member.chunk_size)
            member.sha_ok = True
            return
        expected = -(-self.report.size // member.chunk_size)
        if count != expected:
            self._sha_invalid(member, _(
                '%(count)d digests, the volume of %(size)d bytes has '
                '%(expected)d blocks of %(block)d bytes') % {
                    'count': count, 'size': self.report.size,
                    'expected': expected, 'block': member.chunk_size})
        else:
            member.sha_ok = True

    def _check_object(self, member, obj, digests):
        """Yield now and then while checking one object (a generator)."""
        report, backup = self.report, member.backup
        if obj.name not in member.present:
            report.add(backup.id, MISSING, obj.offset, obj.length,
                       obj=obj.name)
            self.done += obj.length
            return
        try:
            manager = self.service.get_object_reader(
                backup.container, obj.name,
                extra_metadata=obj.extra_metadata)
            reader = _in_pieces(manager.__enter__())
        except Exception as exc:
            if not _is_not_found(exc):
                raise self._error(_('object %(o)s of backup %(b)s cannot be '
                                    'read: %(e)s') % {'o': obj.name,
                                                      'b': backup.id,
                                                      'e': exc}) from exc
            report.add(backup.id, MISSING, obj.offset, obj.length,
                       obj=obj.name)
            self.done += obj.length
            return
        check = _ObjectCheck(self, member, obj, digests)
        try:
            try:
                decoder = object_stream.decoder_for(obj.compression, reader)
            except Exception as exc:
                raise _Undecodable(str(exc)) from exc
            yield from check.run(decoder)
        except _Undecodable as exc:
            cause = exc.__cause__
            if cause is not None and _is_store_error(cause):
                raise self._error(_('object %(o)s of backup %(b)s cannot be '
                                    'read: %(e)s') % {'o': obj.name,
                                                      'b': backup.id,
                                                      'e': cause}) from cause
            if cause is not None and _is_not_found(cause):
                check.failed(MISSING, str(cause), whole=True)
            else:
                check.failed(UNDECODABLE, str(cause or exc))
        finally:
            _close(reader)
            with contextlib.suppress(Exception):
                manager.__exit__(None, None, None)
        report.objects_checked += 1
        self.done += obj.length - check.position + obj.offset

    # -- the chain composes to the requested backup's digests -----------

    def composable(self):
        if self.broken or not self.members:
            return False
        if not all(m.sha_ok for m in self.members):
            return False
        sizes = {m.chunk_size for m in self.members}
        if len(sizes) > 1:
            top = self.members[-1]
            for member in self.members[:-1]:
                if member.chunk_size != top.chunk_size:
                    self._sha_invalid(member, _(
                        'hash blocks of %(own)d bytes, the requested '
                        'backup\'s are of %(top)d') % {
                            'own': member.chunk_size,
                            'top': top.chunk_size})
            return False
        return len(self.members) > 1 or any(
            start < end and obj is None for start, end, obj in
            self._segments())

    def _segments(self):
        objs = [obj for m in self.members for obj in m.objects]
        return chain_reader._resolve(objs, self.report.size)

    def check_composition(self):
        """A generator: the requested digests against the holders'."""
        top = self.members[-1]
        block = top.chunk_size
        size = self.report.size
        cursors = {}
        try:
            for member in self.members:
                cursors[member.level] = _Digests(self.service, member)
            wanted = cursors[top.level]
            zero = zero_objects.sha256_of_zeros(block)
            compared = 0
            for start, end, obj in self._segments():
                level = top.level if obj is None else obj.level
                if obj is not None and level == top.level:
                    continue
                holder = cursors.get(level)
                for index in range(start // block, -(-end // block)):
                    length = min(block, size - index * block)
                    got = wanted.get(index)
                    if obj is None:
                        expected = (zero if length == block else
                                    zero_objects.sha256_of_zeros(length))
                    else:
                        expected = holder.get(index)
                    if got != expected:
                        self.report.add(
                            self.backup.id, DIGEST_MISMATCH, index * block,
                            length, obj=obj.name if obj else None,
                            detail=_('the chain gives %(e)s, the requested '
                                     'backup lists %(g)s') % {
                                         'e': expected, 'g': got})
                    compared += 1
                    if not compared % 65536:
                        yield None
        finally:
            for cursor in cursors.values():
                cursor.close()

    # -- deep: a stock restore into a scratch file ------------------------

    def deep(self):
        path = None
        size = self.report.size
        directory = (CONF.backup_verification.scratch_dir or
                     os.path.join(CONF.state_path, 'verification'))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            path = os.path.join(directory, 'cvb-verify-%s-%s' % (
                self.backup.id, uuid.uuid4().hex))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise self._error(_('no scratch file in %(d)s: %(e)s') % {
                'd': directory, 'e': exc}) from exc
        try:
            with os.fdopen(fd, 'r+b') as scratch:
                os.ftruncate(scratch.fileno(), size)
                self._restore_into(scratch)
                self.report.restored = True
                self.done += size
                scratch.flush()
                scratch.seek(0)
                self.on_native_thread(lambda: self._check_scratch(scratch))
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    def _restore_into(self, scratch):
        service = copy.copy(self.service)
        # restore() would write the backed-up volume metadata onto the
        # volume given; a verification restores no volume.
        service.put_metadata = _no_volume_metadata
        requested = _RestoringView(self.backup, self.tick)
        try:
            service.restore(requested, self.backup.volume_id, scratch, True)
        except (Cancelled, exception.BackupRestoreCancel):
            raise Cancelled()
        except OSError as exc:
            raise self._error(_('the scratch file could not be written: '
                                '%s') % exc) from exc
        except Exception as exc:
            self.report.add(self.backup.id, UNDECODABLE, 0, self.report.size,
                            detail=_('the restore failed: %s') % exc)

    def _check_scratch(self, scratch):
        top = self.members[-1]
        block = top.chunk_size
        digests = _Digests(self.service, top)
        try:
            position = 0
            size = self.report.size
            while position < size:
                data = scratch.read(min(READ_BYTES, size - position))
                if not data:
                    self.report.add(self.backup.id, TRUNCATED, position,
                                    size - position, detail=_(
                                        'the restored file is short'))
                    return
                view = memoryview(data)
                zero = data == _ZERO[:len(data)]
                for at in range(0, len(data), block):
                    piece = view[at:at + block]
                    index = (position + at) // block
                    got = (zero_objects.sha256_of_zeros(len(piece)) if zero
                           else hashlib.sha256(piece).hexdigest())
                    if got != digests.get(index):
                        self.report.add(self.backup.id, DIGEST_MISMATCH,
                                        position + at, len(piece), detail=_(
                                            'the restored data differs'))
                    self.report.blocks_checked += 1
                position += len(data)
                self.done += len(data)
                if not position % TICK_BYTES:
                    yield None
        finally:
            digests.close()


def _no_volume_metadata(volume_id, json_metadata):
    return None


class _RestoringView(object):
    """The requested backup as Cinder's ``restore()`` wants it.

    ``restore()`` stops unless the requested backup is ``restoring``
    (reloaded before each object); a verification leaves the backup's
    status alone, so it sees this view, whose status stays ``restoring``
    until the verification is cancelled.
    """

    def __init__(self, backup, tick):
        self._backup = backup
        self._tick = tick

    def __getitem__(self, key):
        return self._backup[key]

    def __getattr__(self, name):
        return getattr(self._backup, name)

    @property
    def status(self):
        return fields.BackupStatus.RESTORING

    def as_read_deleted(self):
        return contextlib.nullcontext()

    def refresh(self):
        self._tick()


class _Undecodable(Exception):
    pass


class _ObjectCheck(object):
    """One object inflated and hashed; its problems added to the report."""

    def __init__(self, run, member, obj, digests):
        self._run = run
        self._member = member
        self._obj = obj
        self._digests = digests
        self._block = member.chunk_size if digests is not None else None
        self.position = obj.offset
        #: Start of the first block whose digest is not checked yet.
        self._unchecked = obj.offset
        self._pending = bytearray()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._hashing = collections.deque()
        self._zeros = 0  # zero bytes not yet given to md5
        self._block_problems = False

    def failed(self, reason, detail, whole=False):
        """A problem of the object from its first unchecked block on.

        ``whole``: of the whole object, a volume region only where no
        block of it failed its digest (those blocks say where it is).
        """
        obj = self._obj
        start = obj.offset if whole else self._unchecked
        self._run.report.add(self._member.backup.id, reason, start,
                             obj.end - start, obj=obj.name, detail=detail,
                             region=not (whole and self._block_problems))

    def run(self, decoder):
        obj = self._obj
        since_tick = 0
        while self.position < obj.end:
            try:
                data = decoder.read(min(READ_BYTES, obj.end - self.position))
            except Exception as exc:
                raise _Undecodable(str(exc)) from exc
            if not data:
                self.failed(TRUNCATED, _('its data ends at byte %(got)d of '
                                         '%(want)d') % {
                                             'got': self.position - obj.offset,
                                             'want': obj.length})
                return
            self._take(data)
            since_tick += len(data)
            if since_tick >= TICK_BYTES:
                self._run.done += since_tick
                since_tick = 0
                yield None
        self._run.done += since_tick
        self._end_of_blocks()
        try:
            extra = decoder.read(1)
        except Exception:
            extra = b''
        if extra or not decoder.at_end():
            inner = getattr(decoder, '_d', None)
            if extra or getattr(inner, 'eof', False):
                self.failed(TOO_LONG, _('it holds more than its recorded '
                                        '%d bytes') % obj.length, whole=True)
            else:
                self.failed(UNDECODABLE, _('its compressed stream does not '
                                           'end where its data does'),
                            whole=True)
            return
        if self._zeros and self._zeros == obj.length:
            digest = zero_objects.md5_of_zeros(obj.length)
        else:
            self._flush_zeros()
            while self._hashing:
                self._hashing.popleft().result()
            digest = self._md5.hexdigest()
        if obj.md5 and digest != obj.md5:
            self.failed(MD5_MISMATCH, _('md5 %(got)s, the metadata records '
                                        '%(want)s') % {'got': digest,
                                                       'want': obj.md5},
                        whole=True)

    def _md5_update(self, data):
        self._hashing.append(self._run.hasher.submit(self._md5.update, data))
        while len(self._hashing) > MD5_PENDING:
            self._hashing.popleft().result()

    def _flush_zeros(self):
        while self._zeros:
            step = min(self._zeros, len(_ZERO))
            self._md5_update(_ZERO[:step] if step < len(_ZERO) else _ZERO)
            self._zeros -= step

    def _take(self, data):
        run = self._run
        zero = data == _ZERO[:len(data)]
        if zero and self._zeros == self.position - self._obj.offset:
            self._zeros += len(data)
        else:
            self._flush_zeros()
            self._md5_update(data)
        self.position += len(data)
        run.report.bytes_checked += len(data)
        if self._block is None:
            self._unchecked = self.position
            return
        block = self._block
        view = memoryview(data)
        at = 0
        if self._pending:
            need = block - len(self._pending)
            self._pending += view[:need]
            at = need
            if len(self._pending) < block:
                return
            self._block_done(bytes(self._pending), False)
            self._pending = bytearray()
        while len(data) - at >= block:
            self._block_done(view[at:at + block], zero)
            at += block
        if at < len(data):
            self._pending += view[at:]

    def _end_of_blocks(self):
        if self._pending:
            self._block_done(bytes(self._pending), False)
            self._pending = bytearray()

    def _block_done(self, piece, zero):
        start = self._unchecked
        length = len(piece)
        self._unchecked += length
        if zero:
            got = zero_objects.sha256_of_zeros(length)
        else:
            got = hashlib.sha256(piece).hexdigest()
        self._run.report.blocks_checked += 1
        if start % self._block:
            expected = None
        else:
            expected = self._digests.get(start // self._block)
        if expected is None:
            # Past the end of the list (reported with its count) or not
            # on a block boundary.
            if start % self._block:
                self._run.report.add(
                    self._member.backup.id, DIGEST_MISMATCH, start, length,
                    obj=self._obj.name,
                    detail=_('data not aligned on a hash block'))
            return
        if got != expected:
            self._block_problems = True
            self._run.report.add(
                self._member.backup.id, DIGEST_MISMATCH, start, length,
                obj=self._obj.name,
                detail=_('sha256 %(got)s, the sha256 file lists %(want)s')
                % {'got': got, 'want': expected})


def _regions(spans, size):
    """Merged ``[(offset, length)]`` of ``(offset, length)`` spans."""
    ranges = []
    for offset, length in spans:
        start = max(0, offset)
        end = min(size, offset + length) if size else offset + length
        if end > start:
            ranges.append((start, end))
    ranges.sort()
    merged = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end - start) for start, end in merged]


def report_json(report):
    """The report as JSON text (bench, logs)."""
    return json.dumps(report.as_dict(), sort_keys=True)
