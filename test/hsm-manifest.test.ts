import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, writeFileSync, symlinkSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { publish, parseManifest, manifestHash, ManifestError, MANIFEST_NAME, type Manifest } from '../src/hsm/index.js';
import { mulberry32 } from './helpers/random.js';

function tree(): string {
  const root = mkdtempSync(join(tmpdir(), 'fan-hsm-manifest-'));
  mkdirSync(join(root, 'a/b'), { recursive: true });
  writeFileSync(join(root, 'a/b/f'), Buffer.alloc(3 * 4096 + 5, 7));
  writeFileSync(join(root, 'empty'), '');
  symlinkSync('a/b/f', join(root, 'ln'));
  return root;
}

async function withTree(fn: (root: string, m: Manifest) => Promise<void> | void): Promise<void> {
  const root = tree();
  try {
    await fn(root, await publish(root, { chunkSize: 4096 }));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

test('publish lists every entry with chunk hashes and a hash that parse verifies', () =>
  withTree(async (root, m) => {
    assert.deepEqual(
      m.entries.map((e) => `${e.type} ${e.path}`),
      ['dir a', 'dir a/b', 'file a/b/f', 'file empty', 'symlink ln'],
    );
    const f = m.entries.find((e) => e.path === 'a/b/f');
    assert.equal(f?.type, 'file');
    if (f?.type !== 'file') return;
    assert.equal(f.size, 3 * 4096 + 5);
    assert.equal(f.chunks.length, 4);
    assert.equal(f.chunks[0], createHash('sha256').update(Buffer.alloc(4096, 7)).digest('hex'));
    assert.equal(f.chunks[3], createHash('sha256').update(Buffer.alloc(5, 7)).digest('hex'));
    const text = readFileSync(join(root, MANIFEST_NAME), 'utf8');
    assert.deepEqual(parseManifest(text), m);
    // Republishing does not list the manifest itself.
    assert.equal((await publish(root, { chunkSize: 4096 })).hash, m.hash);
  }));

test('parse names what is wrong: altered content, bad paths, wrong chunk counts, order', () =>
  withTree((_root, m) => {
    const resigned = (edit: (m: Manifest) => void): string => {
      const c = structuredClone(m) as Manifest;
      edit(c);
      const { hash: _h, ...rest } = c;
      return JSON.stringify({ ...c, hash: manifestHash(rest) });
    };
    assert.throws(() => parseManifest(JSON.stringify({ ...m, chunkSize: 8192 })), /hash mismatch/);
    assert.throws(() => parseManifest('{'), /not JSON/);
    assert.throws(() => parseManifest(resigned((c) => ((c.entries[0] as { path: string }).path = '../etc'))), /entries\.0\.path: must be a relative path/);
    assert.throws(() => parseManifest(resigned((c) => (c.entries[2] as { chunks: string[] }).chunks.pop())), /a\/b\/f: 3 chunk hashes for 12293 bytes \(expected 4\)/);
    assert.throws(() => parseManifest(resigned((c) => c.entries.reverse())), /parent directory is not listed before it/);
    assert.throws(() => parseManifest(resigned((c) => c.entries.push(c.entries[3] as never))), /duplicate path empty/);
  }));

test('fuzz: mutated manifests are rejected with ManifestError, never another exception', () =>
  withTree((_root, m) => {
    const text = JSON.stringify(m);
    const rand = mulberry32(0x45a);
    let rejected = 0;
    for (let i = 0; i < 3000; i++) {
      const bytes = Buffer.from(text);
      const kind = rand() % 3;
      let mutated: string;
      if (kind === 0) {
        for (let k = 0; k <= rand() % 4; k++) bytes[rand() % bytes.length] = rand() % 256;
        mutated = bytes.toString('latin1');
      } else if (kind === 1) {
        mutated = text.slice(0, rand() % text.length);
      } else {
        const at = rand() % text.length;
        mutated = text.slice(0, at) + text.slice(at + 1 + (rand() % 8));
      }
      if (mutated === text) continue;
      try {
        parseManifest(mutated);
        assert.fail(`accepted a mutated manifest (iteration ${i})`);
      } catch (err) {
        assert.ok(err instanceof ManifestError, `iteration ${i}: ${String(err)}`);
        rejected++;
      }
    }
    assert.ok(rejected > 2900);
  }));
