//! Evidence about the broker's call in progress from what it causes: scheduler switches
//! (off-CPU time, D-state sleep), pages it brings into the page cache, page-cache lookups,
//! and readahead (a tracepoint on 6.18+, a kprobe on older kernels that allow them).
use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{kprobe, tracepoint},
    programs::{ProbeContext, TracePointContext},
};

use crate::{
    config::{CONFIG, global},
    inflight::{broker_tid, call_of, with_current_call},
};

/// TASK_UNINTERRUPTIBLE as reported in sched_switch's prev_state.
const TASK_UNINTERRUPTIBLE: i64 = 0x2;

/// sched:sched_switch. Measures off-CPU time, and D-state sleep within it, of broker
/// threads inside a traced call.
#[tracepoint]
pub fn sched_switch(ctx: TracePointContext) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };
    // `current` is the task switched out.
    if broker_tid().is_some() {
        let prev_pid: i32 = unsafe { ctx.read_at(global(&CONFIG.switch_prev_pid_offset) as usize) }.unwrap_or(0);
        if let Some(call) = call_of(prev_pid as u32) {
            let prev_state: i64 = unsafe { ctx.read_at(global(&CONFIG.switch_prev_state_offset) as usize) }.unwrap_or(0);
            unsafe {
                (*call).switched_out_ns = now;
                (*call).switched_out_blocked = (prev_state & TASK_UNINTERRUPTIBLE != 0) as u8;
            }
        }
    }
    let next_pid: i32 = unsafe { ctx.read_at(global(&CONFIG.switch_next_pid_offset) as usize) }.unwrap_or(0);
    if next_pid == 0 {
        return 0;
    }
    if let Some(call) = call_of(next_pid as u32) {
        unsafe { (*call).switched_in(now) };
    }
    0
}

/// filemap:mm_filemap_add_to_page_cache: this thread brought pages into the page cache.
#[tracepoint]
pub fn page_cache_add(ctx: TracePointContext) -> u32 {
    let Some(tid) = broker_tid() else { return 0 };
    let Some(call) = call_of(tid) else { return 0 };
    let call = unsafe { &mut *call };
    let offset = global(&CONFIG.add_to_cache_order_offset);
    let pages = if offset == u32::MAX {
        1
    } else {
        let order: u8 = unsafe { ctx.read_at(offset as usize) }.unwrap_or(0);
        1u32 << (order & 15)
    };
    call.evidence.pages_added += pages;
    if call.wanted_first <= call.wanted_last {
        let first: u64 = unsafe { ctx.read_at(global(&CONFIG.add_to_cache_index_offset) as usize) }.unwrap_or(u64::MAX);
        let last = first.saturating_add(pages as u64 - 1);
        if first <= call.wanted_last && last >= call.wanted_first {
            call.evidence.wanted_pages_added += pages;
        }
    }
    0
}

/// filemap:mm_filemap_get_pages: the call reads a file through the page cache.
#[tracepoint]
pub fn page_cache_get_pages(ctx: TracePointContext) -> u32 {
    with_current_call(|call| {
        call.evidence.get_pages += 1;
        let field = |offset: &u32| unsafe { ctx.read_at::<u64>(global(offset) as usize) }.unwrap_or(0);
        let last = field(&CONFIG.get_pages_last_index_offset);
        if call.inode == 0 {
            call.inode = field(&CONFIG.get_pages_inode_offset);
            call.dev = unsafe { ctx.read_at::<u32>(global(&CONFIG.get_pages_dev_offset) as usize) }.unwrap_or(0);
            call.first_index = field(&CONFIG.get_pages_index_offset);
            call.last_index = last;
        } else if last > call.last_index {
            call.last_index = last;
        }
    });
    0
}

/// readahead:page_cache_sync_ra (6.18+): a page the call needs is not in the page cache.
#[tracepoint]
pub fn sync_readahead(_ctx: TracePointContext) -> u32 {
    with_current_call(|call| call.evidence.sync_readahead += 1);
    0
}

/// The same evidence from a kprobe on page_cache_sync_ra() (5.10+), where the tracepoint
/// is missing and kprobes are allowed.
#[kprobe]
pub fn sync_readahead_kprobe(_ctx: ProbeContext) -> u32 {
    with_current_call(|call| call.evidence.sync_readahead += 1);
    0
}

/// readahead:page_cache_async_ra (6.18+): prefetch after a hit on a readahead mark.
#[tracepoint]
pub fn async_readahead(_ctx: TracePointContext) -> u32 {
    with_current_call(|call| call.evidence.async_readahead += 1);
    0
}

/// The same evidence from a kprobe on page_cache_async_ra() (5.10+).
#[kprobe]
pub fn async_readahead_kprobe(_ctx: ProbeContext) -> u32 {
    with_current_call(|call| call.evidence.async_readahead += 1);
    0
}
