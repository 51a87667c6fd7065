"""The content side of TwinLedger: age encryption, UnixFS/CID importer, blockstore, CAR,
Kubo RPC client, trustless-gateway client. Knows nothing about the chain."""
