# bash completion for tunnel(8). Installed by the Debian package; for a pip install,
# source it from ~/.bashrc or copy it to ~/.local/share/bash-completion/completions/tunnel.
# tests/system/test_completion.py checks that it offers every subcommand and option.

_tunnel() {
    local cur prev words cword
    if declare -F _init_completion >/dev/null; then
        _init_completion || return
    else
        cur=${COMP_WORDS[COMP_CWORD]}
        prev=${COMP_WORDS[COMP_CWORD-1]}
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi

    local commands="run check reload status demo gen-cert"
    local levels="debug info warning error"

    # The subcommand is the first word after "tunnel" that is not an option.
    local i command=""
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            -*) ;;
            *) command=${words[i]}; break ;;
        esac
    done

    case $prev in
        -c | --config | --out)
            COMPREPLY=($(compgen -f -- "$cur"))
            compopt -o filenames 2>/dev/null
            return ;;
        --log-level)
            COMPREPLY=($(compgen -W "$levels" -- "$cur"))
            return ;;
        --pid | --timeout | --admin | --port | --host | --name | --days)
            return ;;  # a value the user has to type
    esac

    local options
    case $command in
        "") options="--help --version"
            if [[ $cur != -* ]]; then
                COMPREPLY=($(compgen -W "$commands" -- "$cur"))
                return
            fi ;;
        run) options="--config --log-level --daemon --help" ;;
        check) options="--config --help" ;;
        reload) options="--config --pid --timeout --help" ;;
        status) options="--config --admin --help" ;;
        demo) options="--port --host --log-level --help" ;;
        gen-cert) options="--out --name --days --force --help" ;;
        *) return ;;
    esac
    COMPREPLY=($(compgen -W "$options" -- "$cur"))
}

complete -F _tunnel tunnel
