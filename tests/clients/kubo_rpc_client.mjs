// Drives the built-in engine with the npm `kubo-rpc-client` and prints what
// it got as one JSON object on stdout; tests/engine_clients.rs judges it.
//
// usage: node kubo_rpc_client.mjs NPM_PREFIX CONFIG_JSON
// CONFIG_JSON: {"api": "http://127.0.0.1:PORT", "dir": DIR, "files": [NAME...],
//               "remote": {"cid": CID, "file": NAME}}
// Each NAME is a file in DIR; `remote` is a file only another engine holds.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const [prefix, configText] = process.argv.slice(2)
const config = JSON.parse(configText)
const entry = join(prefix, 'node_modules/kubo-rpc-client/dist/src/index.js')
const { create } = await import(pathToFileURL(entry).href)
const ipfs = create({ url: config.api })

const all = async (it) => {
  const parts = []
  for await (const p of it) parts.push(p)
  return Buffer.concat(parts)
}
const same = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0
const bytesOf = (name) => readFileSync(join(config.dir, name))
const out = {}

const id = await ipfs.id()
out.id = { id: id.id.toString(), addresses: id.addresses.map(String) }
out.version = (await ipfs.version()).version

out.add = []
out.cat = []
let root
for (const name of config.files) {
  const data = bytesOf(name)
  const added = await ipfs.add(data)
  root = added.cid
  out.add.push({ name, cid: added.cid.toString(), size: added.size })
  out.cat.push({ name, same: same(await all(ipfs.cat(added.cid)), data) })
}
// The typed options kubo-rpc-client sends (kebab-cased): CIDv1, raw leaves.
const big = config.files[config.files.length - 1]
const v1 = await ipfs.add(bytesOf(big), { cidVersion: 1, rawLeaves: true, pin: false })
out.add_v1 = { name: big, cid: v1.cid.toString() }

// A range in the middle of the largest file, and a file another engine holds.
const range = await all(ipfs.cat(root, { offset: 300000, length: 500000 }))
out.range = { same: same(range, bytesOf(big).subarray(300000, 800000)), length: range.length }
const remote = await all(ipfs.cat(config.remote.cid, { timeout: 60000 }))
out.remote = { same: same(remote, bytesOf(config.remote.file)) }

// Pins: v1 was added unpinned.
await ipfs.pin.add(v1.cid)
const listed = []
for await (const p of ipfs.pin.ls({ paths: [v1.cid] })) listed.push({ cid: p.cid.toString(), type: p.type })
await ipfs.pin.rm(v1.cid)
const after = []
for await (const p of ipfs.pin.ls()) after.push(p.cid.toString())
out.pin = { listed, still_pinned: after.includes(v1.cid.toString()) }

// Blocks.
const mars = Buffer.from('Hello Mars!\n')
const key = await ipfs.block.put(mars)
const got = await ipfs.block.get(key)
const stat = await ipfs.block.stat(key)
const removed = []
for await (const r of ipfs.block.rm(key)) removed.push({ cid: r.cid.toString(), error: r.error ? r.error.message : null })
const pb = await ipfs.block.put(Buffer.from('\x0a\x1btest json for sharness test', 'latin1'), { format: 'dag-pb' })
out.block = {
  key: key.toString(),
  same: same(got, mars),
  stat: { cid: stat.cid.toString(), size: stat.size },
  removed,
  pb: pb.toString()
}

// dag.get decodes client-side from block/get.
const node = (await ipfs.dag.get(pb)).value
const file = (await ipfs.dag.get(root)).value
out.dag = {
  pb_data: Buffer.from(node.Data).toString('latin1'),
  pb_links: node.Links.length,
  file_links: file.Links.map((l) => ({ hash: l.Hash.toString(), tsize: l.Tsize }))
}

out.peers = (await ipfs.swarm.peers()).map((p) => p.peer.toString())
const repo = await ipfs.repo.stat()
out.repo = { objects: Number(repo.numObjects), size: Number(repo.repoSize) }

process.stdout.write(JSON.stringify(out) + '\n')
