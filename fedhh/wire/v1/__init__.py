"""Generated from protos/fedhh/v1 by fedhh.wire.codegen (make proto). Do not edit."""
